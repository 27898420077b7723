"""One experiment, FuxiCTR style: load an expid's config, train, evaluate, record the result."""
from __future__ import annotations

import logging
import os
import sys
from datetime import datetime

import numpy as np

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.pipeline import datasets
from fuxictr_mmctr.training import distributed
from fuxictr_mmctr.training.devices import resolve_device

DEFAULT_CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config")


def load_params(config_dir: str, expid: str, gpu: int = -1) -> dict:
    """Merged dataset + model parameters of ``expid`` (the ``Base`` block first), as FuxiCTR does."""
    from fuxictr.utils import load_dataset_config, load_model_config

    if not os.path.isdir(config_dir):
        raise UserError(f"config folder {config_dir} not found")
    try:
        params = load_model_config(config_dir, expid)
    except (AssertionError, RuntimeError):
        raise UserError(f"expid {expid} not found in {config_dir}/model_config.yaml") from None
    try:
        params.update(load_dataset_config(config_dir, params["dataset_id"]))
    except RuntimeError:
        raise UserError(
            f"dataset_id {params['dataset_id']} of expid {expid} not found in "
            f"{config_dir}/dataset_config.yaml"
        ) from None
    params["gpu"] = gpu
    return params


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


def make_loader(params: dict, catalogue, path: str, train: bool, device, group=None):
    """A :class:`BatchLoader` over the parquet at ``path`` with the experiment's settings.

    Training batches follow the config's ``shuffle`` and ``batch_size``; evaluation batches are
    in file order with ``eval_batch_size`` (default ``batch_size``). The split is read through
    the catalogue: the dataset's item-id mapping and schema, wherever the file lives. With a
    distributed ``group`` the loader yields this rank's shard; training shards are even, so
    every rank runs the same number of steps.
    """
    from fuxictr_mmctr.data.loader import BatchLoader

    rank, world_size = (group.rank, group.world_size) if group is not None else (0, 1)
    batch_size = params["batch_size"]
    if not train:  # evaluation batches can be larger: no gradients are kept
        batch_size = params.get("eval_batch_size") or batch_size
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
    )


def run_experiment(config_dir: str, expid: str, gpu: int = -1, resume: bool = False) -> dict:
    """Train and evaluate ``expid``; print the summary line and append the result CSV row.

    Returns ``{"expid", "valid": {...}, "test": {...} or None, "test_auc_truth": float | None,
    "oracle_auc": float | None}``. Under torchrun (``WORLD_SIZE > 1``) each process trains on its
    shard of the train rows and only rank 0 logs, writes and prints
    (:mod:`fuxictr_mmctr.training.distributed`).
    """
    if os.environ.get("WORLD_SIZE", "1") in ("", "1"):
        resolve_device(gpu)  # a GPU that is not there is an error before anything is written
    group, gpu = distributed.start(gpu)
    try:
        return _train_and_evaluate(config_dir, expid, gpu, resume, group)
    finally:
        distributed.stop(group)


def _train_and_evaluate(config_dir: str, expid: str, gpu: int, resume: bool, group) -> dict:
    """:func:`run_experiment` inside its process group (one plain process or a torchrun rank)."""
    from fuxictr.pytorch.torch_utils import seed_everything
    from fuxictr.utils import print_to_list, set_logger

    params = load_params(config_dir, expid, gpu)
    train_shuffle(params)
    with distributed.main_first(group):
        datasets.ensure_dataset(params)  # before any log or checkpoint file exists
    if group.is_main:
        set_logger(params)
        logging.info("Params: %s", params)
        if group.is_distributed:
            logging.info("Distributed: %d processes (%s)", group.world_size,
                         "one GPU each" if gpu >= 0 else "CPU, gloo")
    seed_everything(seed=int(params.get("seed", 2025)))

    with distributed.main_first(group):  # rank 0 writes shared files, the others read them
        feature_map, catalogue = prepare(params)
        model = build_model(params, feature_map, catalogue)
        model.count_parameters()
        train_loader = make_loader(params, catalogue, params["train_data"], True, model.device,
                                   group)
        valid_loader = make_loader(params, catalogue, params["valid_data"], False, model.device,
                                   group)
    if group.is_distributed:
        model.wrap_distributed()
    model.fit(train_loader, epochs=int(params["epochs"]), validation_data=valid_loader,
              resume=resume)

    logging.info("****** Validation evaluation ******")
    model.load_weights(model.checkpoint)
    valid_result = model.evaluate(valid_loader)
    test_result, test_auc_truth = _evaluate_test(params, catalogue, model, group)

    oracle = datasets.oracle_auc(params, "valid")
    if group.is_main:
        write_result_row(config_dir, expid, params["dataset_id"], valid_result, test_result,
                         print_to_list)
        print(summary_line(expid, valid_result, oracle, test_auc_truth), flush=True)
    return {"expid": expid, "valid": valid_result, "test": test_result,
            "test_auc_truth": test_auc_truth, "oracle_auc": oracle}


def _evaluate_test(params: dict, catalogue, model, group):
    """``(test metrics or None, test AUC against the synthetic truth or None)``.

    A test split with labels is evaluated, unless its labels are one constant (a placeholder
    column, as some exports carry): then test metrics are skipped with one log line. On
    synthetic data the test labels live only in ``truth.parquet``, read here by the pipeline
    (never by the model) to report the test AUC next to the valid AUC that chose the checkpoint.
    """
    test_path = params.get("test_data")
    if not test_path or not os.path.exists(test_path):
        return None, None
    test_loader = make_loader(params, catalogue, test_path, False, model.device, group)
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
    logging.info("Test AUC against the synthetic truth: %.6f", test_auc)
    return test_result, test_auc


def summary_line(expid: str, valid_result: dict, oracle, test_auc=None) -> str:
    """``result expid=<id> AUC=<valid AUC> logloss=<valid logloss> [test_AUC=<AUC>]
    oracle_AUC=<value or NA>`` (``test_AUC`` on synthetic data, from its truth file)."""
    oracle_text = "NA" if oracle is None else f"{oracle:.6f}"
    test_text = "" if test_auc is None else f" test_AUC={test_auc:.6f}"
    return (f"result expid={expid} AUC={valid_result['AUC']:.6f} "
            f"logloss={valid_result['logloss']:.6f}{test_text} oracle_AUC={oracle_text}")


def write_result_row(config_dir, expid, dataset_id, valid_result, test_result, format_metrics):
    """Append one line per run to ``<config folder name>.csv`` in the working folder (FuxiCTR)."""
    csv_name = os.path.basename(os.path.normpath(config_dir)).replace(".yaml", "") + ".csv"
    line = " {},[command] python {},[exp_id] {},[dataset_id] {},[train] {},[val] {},[test] {}\n".format(
        datetime.now().strftime("%Y%m%d-%H%M%S"),
        " ".join(sys.argv),
        expid,
        dataset_id,
        "N.A.",
        format_metrics(valid_result),
        format_metrics(test_result) if test_result else "N.A.",
    )
    with open(csv_name, "a", encoding="utf-8") as handle:
        handle.write(line)
