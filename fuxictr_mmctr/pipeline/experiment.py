"""One experiment, FuxiCTR style: load an expid's config, train, evaluate, record the result."""
from __future__ import annotations

import logging
import os
import sys
from datetime import datetime

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.pipeline import datasets, distributed

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


def build_model(params: dict, feature_map):
    """Instantiate the registered model class named by ``params['model']``."""
    from fuxictr_mmctr.models.registry import get_model_class

    model_class = get_model_class(params["model"])
    return model_class(feature_map, **params)


def prepare(params: dict):
    """Data folder, feature map and the item table path for an experiment's params."""
    from fuxictr_mmctr.data.feature_map import build_feature_map

    datasets.ensure_dataset(params)
    return build_feature_map(params)


def make_loader(params: dict, path: str, shuffle: bool, device, group=None):
    """A :class:`BatchLoader` over the parquet at ``path`` with the experiment's settings.

    With a distributed ``group`` (:mod:`.distributed`) the loader yields this rank's shard;
    training shards are even, so every rank runs the same number of steps.
    """
    from fuxictr_mmctr.data.loader import BatchLoader, load_split

    rank, world_size = (group.rank, group.world_size) if group is not None else (0, 1)

    batch_size = params["batch_size"]
    if not shuffle:  # evaluation batches can be larger: no gradients are kept
        batch_size = params.get("eval_batch_size") or batch_size
    return BatchLoader(
        load_split(path),
        batch_size=int(batch_size),
        shuffle=shuffle,
        seed=int(params.get("seed", 0)),
        max_len=params.get("max_len"),
        device=device,
        rank=rank,
        world_size=world_size,
        even_shards=shuffle and world_size > 1,
    )


def run_experiment(config_dir: str, expid: str, gpu: int = -1, resume: bool = False) -> dict:
    """Train and evaluate ``expid``; print the summary line and append the result CSV row.

    Returns ``{"expid", "valid": {...}, "test": {...} or None, "oracle_auc": float | None}``.
    Under torchrun (``WORLD_SIZE > 1``) each process trains on its shard of the train rows and
    only rank 0 logs, writes and prints (:mod:`fuxictr_mmctr.pipeline.distributed`).
    """
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
    with distributed.main_first(group):
        datasets.ensure_dataset(params)  # before any log or checkpoint file exists
    if group.is_main:
        set_logger(params)
        logging.info("Params: %s", params)
        if group.is_distributed:
            logging.info("Distributed: %d processes (%s)", group.world_size,
                         "one GPU each" if gpu >= 0 else "CPU, gloo")
    seed_everything(seed=int(params.get("seed", 2025)))

    with distributed.main_first(group):
        feature_map = prepare(params)
    model = build_model(params, feature_map)
    model.count_parameters()
    if group.is_distributed:
        model.wrap_distributed()
    with distributed.main_first(group):  # rank 0 writes the array cache, the others read it
        train_loader = make_loader(params, params["train_data"], True, model.device, group)
        valid_loader = make_loader(params, params["valid_data"], False, model.device, group)
    model.fit(train_loader, epochs=int(params["epochs"]), validation_data=valid_loader,
              resume=resume)

    logging.info("****** Validation evaluation ******")
    model.load_weights(model.checkpoint)
    valid_result = model.evaluate(valid_loader)
    test_result = None
    if params.get("test_data") and datasets.has_labels(params["test_data"]):
        logging.info("******** Test evaluation ********")
        test_loader = make_loader(params, params["test_data"], False, model.device, group)
        test_result = model.evaluate(test_loader)

    oracle = datasets.oracle_auc(params, "valid")
    if group.is_main:
        write_result_row(config_dir, expid, params["dataset_id"], valid_result, test_result,
                         print_to_list)
        print(summary_line(expid, valid_result, oracle), flush=True)
    return {"expid": expid, "valid": valid_result, "test": test_result, "oracle_auc": oracle}


def summary_line(expid: str, valid_result: dict, oracle) -> str:
    """``result expid=<id> AUC=<valid AUC> logloss=<valid logloss> oracle_AUC=<value or NA>``."""
    oracle_text = "NA" if oracle is None else f"{oracle:.6f}"
    return (f"result expid={expid} AUC={valid_result['AUC']:.6f} "
            f"logloss={valid_result['logloss']:.6f} oracle_AUC={oracle_text}")


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
