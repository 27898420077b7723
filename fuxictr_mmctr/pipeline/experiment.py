"""One experiment, FuxiCTR style: load an expid's config, train, evaluate, record the result."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from datetime import datetime

import numpy as np

from fuxictr_mmctr.errors import EXIT_USAGE, UserError
from fuxictr_mmctr.pipeline import config_check, datasets, run_checks, run_lock
from fuxictr_mmctr.training import distributed
from fuxictr_mmctr.training.devices import resolve_device

DEFAULT_CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config")


def load_params(config_dir: str, expid: str, gpu: int = -1, overrides: dict | None = None) -> dict:
    """Merged and checked parameters of ``expid`` (see :mod:`.config_check`).

    ``overrides`` (e.g. ``{"seed": 7, "model_id": "X_seed7"}``, as the model comparison sets
    them) replace config keys before the check, so they are checked like the config itself.
    """
    params = config_check.load_params(config_dir, expid, gpu)
    params.update(overrides or {})
    return config_check.check_params(params, where=f"expid {expid}")


def prepare(params: dict):
    """The dataset (generated first when synthetic), its feature map and its item catalogue.

    Returns ``(feature_map, catalogue)``: the catalogue
    (:class:`~fuxictr_mmctr.data.catalogue.ItemCatalogue`) decides the item-id mapping once
    and gives the item table and every split with it.
    """
    from fuxictr_mmctr.data.catalogue import ItemCatalogue
    from fuxictr_mmctr.data.feature_map import build_feature_map

    datasets.ensure_dataset(params)
    feature_map = build_feature_map(params)
    return feature_map, ItemCatalogue.from_params(params, feature_map)


def build_model(params: dict, feature_map, catalogue):
    """Instantiate the registered model class named by ``params['model']`` on the catalogue's
    item table."""
    from fuxictr_mmctr.models.registry import get_model_class

    model_class = get_model_class(params["model"])
    return model_class(feature_map, **{**params, "item_table": catalogue.item_table()})


def train_shuffle(params: dict) -> bool:
    """The config's ``shuffle`` for the training rows (default ``True``)."""
    shuffle = params.get("shuffle", True)
    if not isinstance(shuffle, bool):
        raise UserError(f"shuffle must be True or False, got {shuffle!r}")
    return shuffle


def make_loader(params: dict, catalogue, path: str, train: bool, device, group=None,
                trim_history: bool = False):
    """A :class:`BatchLoader` over the parquet at ``path`` with the experiment's settings.

    Training batches follow the config's ``shuffle`` and ``batch_size``; evaluation batches are
    in file order with ``eval_batch_size`` (default ``batch_size``). The split is read through
    the catalogue: the dataset's item-id mapping and schema, wherever the file lives. With a
    distributed ``group`` the loader yields this rank's shard; training shards are even, so
    every rank runs the same number of steps. The dataset config's ``loader:`` block sets
    ``on_device``, ``pin_memory`` and ``drop_last`` (training batches only);
    ``trim_history`` (the model's ``trims_history``) drops each batch's all-padding columns.
    """
    from fuxictr_mmctr.data.loader import BatchLoader, loader_options

    rank, world_size = (group.rank, group.world_size) if group is not None else (0, 1)
    batch_size = params["batch_size"]
    if not train:  # evaluation batches can be larger: no gradients are kept
        batch_size = params.get("eval_batch_size") or batch_size
    options = loader_options(params)
    return BatchLoader(
        catalogue.load_split(path),
        batch_size=int(batch_size),
        shuffle=train and train_shuffle(params),
        seed=int(params.get("seed", 0)),
        max_len=params.get("max_len"),
        device=device,
        rank=rank,
        world_size=world_size,
        even_shards=train and world_size > 1,
        on_device=options["on_device"],
        pin_memory=options["pin_memory"],
        drop_last=train and options["drop_last"],
        trim_history=trim_history,
    )


def run_experiment(config_dir: str, expid: str, gpu: int = -1, resume: bool = False,
                   dist_timeout_minutes: float = distributed.DEFAULT_TIMEOUT_MINUTES,
                   overrides: dict | None = None, valid_scores: bool = False,
                   evaluation_listeners=(), write_row: bool = True) -> dict:
    """Train and evaluate ``expid``; print the summary line and append the result CSV row.

    Returns ``{"expid", "valid": {...}, "test": {...} or None, "test_auc_truth": float | None,
    "oracle_auc": float | None, "parameters": int, "train_seconds": float,
    "train_samples": int}`` (``train_seconds``: wall time of training, the per-epoch
    validation included; ``train_samples``: rows trained on, all processes together).
    ``valid_scores=True`` adds ``"valid_scores"``: the best checkpoint's predictions on the
    valid split, ``(N,) float64`` in file order (one more pass over the valid split).
    ``overrides`` replace config keys (see :func:`load_params`). The configuration is checked
    before anything is written. ``evaluation_listeners`` join the trainer's
    (``listener(logs, epochs_done)`` after each evaluation in training); one that raises stops
    training and its exception leaves this function (a tuner prunes a trial so).
    ``write_row=False`` appends no CSV row and prints no summary line: the caller records
    the run itself.
    Under torchrun (``WORLD_SIZE > 1``) each process trains on its shard of the train rows and
    only rank 0 logs, writes and prints (:mod:`fuxictr_mmctr.training.distributed`); a process
    that hears nothing from the others for ``dist_timeout_minutes`` stops the job.
    """
    under_torchrun = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    try:
        params = load_params(config_dir, expid, gpu, overrides)
        if not under_torchrun:
            resolve_device(gpu)  # a GPU that is not there is an error before anything is written
    except UserError:
        if under_torchrun and os.environ.get("RANK", "0") != "0":
            raise SystemExit(EXIT_USAGE) from None  # the same error: rank 0 prints it, once
        raise
    group, gpu = distributed.start(gpu, timeout_minutes=dist_timeout_minutes)
    params["gpu"] = gpu
    try:
        with distributed.explain_timeouts(group, dist_timeout_minutes):
            return _train_and_evaluate(config_dir, params, resume, group, valid_scores,
                                       dist_timeout_minutes=dist_timeout_minutes,
                                       listeners=evaluation_listeners, write_row=write_row)
    finally:
        distributed.stop(group)


def set_logger(params: dict) -> str:
    """Log to ``<model_root>/<dataset_id>/<model_id>.log`` (appended: an earlier run's log is
    never wiped) and to the console; returns the log file's path."""
    import fuxictr

    log_dir = os.path.join(params.get("model_root", "./checkpoints/"), params["dataset_id"])
    os.makedirs(log_dir, exist_ok=True)
    log_file = os.path.join(log_dir, params["model_id"] + ".log")
    for handler in logging.root.handlers[:]:
        logging.root.removeHandler(handler)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s P%(process)d %(levelname)s %(message)s",
                        handlers=[logging.FileHandler(log_file, mode="a"),
                                  logging.StreamHandler()])
    logging.info("======== %s: python %s (FuxiCTR %s)", params["model_id"], " ".join(sys.argv),
                 fuxictr.__version__)
    return log_file


def data_fingerprint(params: dict) -> dict:
    """``{file name: [size, mtime_ns]}`` of the files a run trains on: a resume compares it."""
    fingerprint = {}
    for key in ("train_data", "valid_data", "item_info"):
        path = params.get(key)
        if path and os.path.exists(path):
            stat = os.stat(path)
            fingerprint[key] = [int(stat.st_size), int(stat.st_mtime_ns)]
    return fingerprint


def _train_and_evaluate(config_dir: str, params: dict, resume: bool, group,
                        valid_scores: bool = False,
                        dist_timeout_minutes: float = distributed.DEFAULT_TIMEOUT_MINUTES,
                        **options) -> dict:
    """:func:`run_experiment` inside its process group (one plain process or a torchrun rank).

    Rank 0 holds the expid's run lock (:mod:`.run_lock`) from before its log, checkpoint and
    resume state are first touched until the run ends: a second run of the expid is refused.
    """
    with contextlib.ExitStack() as lock:
        taken_over = None
        with distributed.main_first(group):
            datasets.ensure_dataset(params)  # before any log or checkpoint file exists
            if group.is_main:
                taken_over = lock.enter_context(run_lock.hold_run_lock(params))
        if group.is_main:
            set_logger(params)
            if taken_over:
                logging.info(taken_over)
            logging.info("Params: %s", params)
            if group.is_distributed:
                logging.info(distributed_summary(group, params["gpu"], dist_timeout_minutes))
        try:
            return _run_logged(config_dir, params, resume, group, valid_scores, **options)
        except UserError as error:
            logging.error("error: %s", error)  # the log tells why the run stopped
            raise


def distributed_summary(group, gpu: int, timeout_minutes: float) -> str:
    """The log line that opens a torchrun job: its processes and the timeout in force."""
    return (f"Distributed: {group.world_size} processes "
            f"({'one GPU each' if gpu >= 0 else 'CPU, gloo'}); a process that hears nothing "
            f"from the others for {timeout_minutes:g} min stops the job (change it with "
            f"run_expid.py --dist-timeout MINUTES)")


def _run_logged(config_dir: str, params: dict, resume: bool, group,
                valid_scores: bool = False, listeners=(), write_row: bool = True) -> dict:
    """Data, model, training, evaluation and the result line, once the log is open."""
    from fuxictr.pytorch.torch_utils import seed_everything
    from fuxictr.utils import print_to_list

    expid = params["model_id"]
    seed_everything(seed=int(params.get("seed", 2025)))
    with distributed.main_first(group):  # rank 0 writes shared files, the others read them
        feature_map, catalogue = prepare(params)
        model = build_model(params, feature_map, catalogue)
        model.count_parameters()
        train_loader = make_loader(params, catalogue, params["train_data"], True, model.device,
                                   group, trim_history=model.trims_history)
        valid_loader = make_loader(params, catalogue, params["valid_data"], False, model.device,
                                   group, trim_history=model.trims_history)
        run_checks.check_valid_labels(valid_loader.split.label, params["valid_data"])
        history_warning = run_checks.history_settings_warning(params,
                                                              catalogue.schema.max_seq_len)
        if history_warning and group.is_main:
            logging.warning(history_warning)
    model.run_signature["data_files"] = data_fingerprint(params)
    model.trainer.evaluation_listeners.extend(listeners)
    if not resume:
        _forget_previous_run(model, group)
    if group.is_distributed:
        model.wrap_distributed()
    fit_start = time.perf_counter()
    model.fit(train_loader, epochs=int(params["epochs"]), validation_data=valid_loader,
              resume=resume)
    train_seconds = time.perf_counter() - fit_start
    train_samples = _samples_trained(model.trainer, train_loader)

    logging.info("****** Validation evaluation ******")  # fit ended with the best weights
    valid_result = model.evaluate(valid_loader)
    scores = model.predict(valid_loader) if valid_scores else None
    test_result, test_auc_truth = _evaluate_test(params, catalogue, model, group)

    oracle = datasets.oracle_auc(params, "valid")
    if group.is_main and write_row:
        write_result_row(config_dir, expid, params["dataset_id"], valid_result, test_result,
                         print_to_list)
        test_note = None if test_auc_truth is not None else run_checks.missing_truth_note(params)
        print(summary_line(expid, valid_result, oracle, test_auc_truth, test_note), flush=True)
    return {"expid": expid, "valid": valid_result, "test": test_result,
            "test_auc_truth": test_auc_truth, "oracle_auc": oracle,
            "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "train_seconds": train_seconds, "train_samples": train_samples,
            **({"valid_scores": scores} if valid_scores else {})}


def _samples_trained(trainer, train_loader) -> int:
    """Rows trained on by this run, every process together: the split's rows (``num_rows`` is
    the whole split, not one rank's shard) times the epochs done, an epoch cut short by early
    stopping counted by its share of batches."""
    steps_per_epoch = max(int(getattr(trainer, "steps_per_epoch", 0) or 0), 1)
    epochs_done = getattr(trainer, "global_step", 0) / steps_per_epoch
    return int(round(epochs_done * train_loader.num_rows))


def _forget_previous_run(model, group) -> None:
    """A new run (no ``--resume``) removes the resume state an earlier run of this expid left:
    ``--resume`` must never continue a run other than the one it interrupted."""
    path = model.resume_checkpoint
    if group.is_main and os.path.exists(path):
        os.remove(path)
        logging.info("Removed the resume state of an earlier run: %s", path)
    distributed.barrier()


def _evaluate_test(params: dict, catalogue, model, group):
    """``(test metrics or None, test AUC against truth.parquet or None)``.

    A test split with labels is evaluated, unless its labels are one constant (a placeholder
    column, as some exports carry): then test metrics are skipped with one log line. On
    synthetic data the test labels live only in ``truth.parquet``, read here by the pipeline
    (never by the model) to report the test AUC next to the valid AUC that chose the checkpoint.
    """
    test_path = params.get("test_data")
    if not test_path or not os.path.exists(test_path):
        return None, None
    test_loader = make_loader(params, catalogue, test_path, False, model.device, group,
                              trim_history=model.trims_history)
    labels = test_loader.split.label
    test_result = None
    if labels is not None:
        if np.unique(np.asarray(labels)).size < 2:
            logging.info("Test split %s: every label is %s (a placeholder column); test metrics "
                         "skipped", test_path, np.asarray(labels)[:1].tolist() or "missing")
        else:
            logging.info("******** Test evaluation ********")
            test_result = model.evaluate(test_loader)
    truth_labels = datasets.synthetic_test_labels(params)
    if truth_labels is None:
        return test_result, None
    from fuxictr_mmctr.training.metrics import auc

    scores = model.predict(test_loader)
    if len(scores) != len(truth_labels):
        raise UserError(f"{test_path}: {len(scores)} rows but truth.parquet has "
                        f"{len(truth_labels)} test labels; regenerate the synthetic data")
    test_auc = distributed.run_on_main(lambda: auc(truth_labels, scores))
    logging.info("Test AUC against the test labels of truth.parquet: %.6f", test_auc)
    return test_result, test_auc


def summary_line(expid: str, valid_result: dict, oracle, test_auc=None,
                 test_note: str | None = None) -> str:
    """``result expid=<id> AUC=<valid AUC> logloss=<valid logloss> [test_AUC=<AUC>]
    oracle_AUC=<value or NA>`` (``test_AUC`` from the dataset's truth file). Without a test
    AUC, ``test_note`` (e.g. ``no-truth.parquet``) says why: ``test_AUC=NA(<note>)``."""
    oracle_text = "NA" if oracle is None else f"{oracle:.6f}"
    test_text = "" if test_auc is None else f" test_AUC={test_auc:.6f}"
    if test_auc is None and test_note:
        test_text = f" test_AUC=NA({test_note})"
    return (f"result expid={expid} AUC={valid_result['AUC']:.6f} "
            f"logloss={valid_result['logloss']:.6f}{test_text} oracle_AUC={oracle_text}")


def result_row(expid, dataset_id, valid_result, test_result, format_metrics, when=None,
               command=None, extra=None) -> str:
    """One FuxiCTR result line: `` <time>,[command] python <args>,[exp_id] ...,[dataset_id]
    ...,[train] N.A.,[val] <metrics>,[test] <metrics or N.A.>``, then ``,[key] value`` for each
    item of ``extra``, and a newline. ``when`` (a datetime) and ``command`` (the arguments
    after ``python``) default to now and this process's."""
    line = " {},[command] python {},[exp_id] {},[dataset_id] {},[train] {},[val] {},[test] {}".format(
        (when or datetime.now()).strftime("%Y%m%d-%H%M%S"),
        " ".join(sys.argv) if command is None else command,
        expid,
        dataset_id,
        "N.A.",
        format_metrics(valid_result) if valid_result else "N.A.",
        format_metrics(test_result) if test_result else "N.A.",
    )
    return line + "".join(f",[{key}] {value}" for key, value in (extra or {}).items()) + "\n"


def write_result_row(config_dir, expid, dataset_id, valid_result, test_result, format_metrics):
    """Append one line per run to ``<config folder name>.csv`` in the working folder (FuxiCTR)."""
    csv_name = os.path.basename(os.path.normpath(config_dir)).replace(".yaml", "") + ".csv"
    line = result_row(expid, dataset_id, valid_result, test_result, format_metrics)
    try:
        with open(csv_name, "a", encoding="utf-8") as handle:
            handle.write(line)
    except OSError as error:
        raise UserError(f"cannot append the result to {os.path.abspath(csv_name)}: "
                        f"{error.strerror}") from None
