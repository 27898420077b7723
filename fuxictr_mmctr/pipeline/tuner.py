"""Hyperparameter grids with ``fuxictr.autotuner``, with dataset-level keys made to work.

fuxictr 2.3.10's ``enumerate_params`` fails on a grid over a dataset-level key: it reuses one
parameter dict for every dataset combination and deletes its ``model_id`` twice (KeyError); with
``rebuild_dataset: False`` (our configs: the loader caches its own arrays) it would also key every
combination by the same dataset_id. So we expand the dataset-level part of the grid here, give
each combination its own dataset_id (``<id>_<hash>``), let the autotuner expand the model-level
part for each, and merge the results into the folder the autotuner would have written.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile

import yaml

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.fileio import write_text_atomic


def _read_tuner_config(config_file: str) -> dict:
    if not os.path.exists(config_file):
        raise UserError(f"tuner config {config_file} not found")
    with open(config_file, encoding="utf-8") as handle:
        config = yaml.safe_load(handle) or {}
    for key in ("base_expid", "tuner_space"):
        if key not in config:
            raise UserError(f"{config_file}: missing key {key!r}")
    return config


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _base_configs(config_file: str, config: dict):
    """The base expid's merged model params and its dataset params."""
    from fuxictr.utils import load_dataset_config, load_model_config

    base_dir = os.path.abspath(config.get("base_config", os.path.dirname(config_file)))
    expid = config["base_expid"]
    try:
        model_params = config.get("model_config", {}).get(expid) or load_model_config(base_dir, expid)
    except (AssertionError, RuntimeError):
        raise UserError(f"{config_file}: base_expid {expid} not found in {base_dir}") from None
    dataset_id = config.get("dataset_id", model_params["dataset_id"])
    try:
        dataset_params = (config.get("dataset_config", {}).get(dataset_id)
                          or load_dataset_config(base_dir, dataset_id))
    except RuntimeError:
        raise UserError(f"{config_file}: dataset_id {dataset_id} not found in {base_dir}") from None
    dataset_params = {k: v for k, v in dataset_params.items() if k != "dataset_id"}
    return expid, model_params, dataset_id, dataset_params


def _dataset_grid(dataset_id: str, dataset_params: dict, dataset_space: dict) -> dict:
    """dataset_id -> params for every combination of the dataset-level keys."""
    keys = sorted(dataset_space)
    grid = {}
    for values in itertools.product(*(_as_list(dataset_space[k]) for k in keys)):
        overrides = dict(zip(keys, values))
        params = {**dataset_params, **overrides, "rebuild_dataset": False}
        params.setdefault("data_format", "parquet")
        if keys:
            digest = hashlib.md5(json.dumps(overrides, sort_keys=True, default=str).encode())
            grid[f"{dataset_id}_{digest.hexdigest()[:8]}"] = params
        else:
            grid[dataset_id] = params
    return grid


def expand_tuner_config(config_file: str) -> str:
    """Write the grid's ``dataset_config.yaml``/``model_config.yaml``; return their folder.

    The folder is ``config_file`` without ``.yaml`` (as fuxictr does).
    """
    from fuxictr import autotuner

    config_file = os.path.abspath(config_file)
    config = _read_tuner_config(config_file)
    expid, model_params, dataset_id, dataset_params = _base_configs(config_file, config)
    space = config["tuner_space"] or {}
    unknown = set(space) - set(model_params) - set(dataset_params)
    if unknown:
        raise UserError(f"{config_file}: tuner_space keys not in the base configs: {sorted(unknown)}")
    dataset_space = {k: v for k, v in space.items() if k in dataset_params and k not in model_params}
    model_space = {k: v for k, v in space.items() if k not in dataset_space}

    all_datasets, all_expids = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for grid_dataset_id, params in _dataset_grid(dataset_id, dataset_params, dataset_space).items():
            scratch_file = os.path.join(scratch, grid_dataset_id + ".yaml")
            with open(scratch_file, "w", encoding="utf-8") as handle:
                yaml.safe_dump({"base_expid": expid, "dataset_id": grid_dataset_id,
                                "tuner_space": model_space,
                                "model_config": {expid: {**model_params, "dataset_id": grid_dataset_id}},
                                "dataset_config": {grid_dataset_id: params}}, handle)
            generated = autotuner.enumerate_params(scratch_file)
            with open(os.path.join(generated, "dataset_config.yaml"), encoding="utf-8") as handle:
                all_datasets.update(yaml.safe_load(handle))
            with open(os.path.join(generated, "model_config.yaml"), encoding="utf-8") as handle:
                for name, model in yaml.safe_load(handle).items():
                    suffix = name.rsplit("_", 1)[-1]
                    all_expids[f"{expid}_{len(all_expids) + 1:03d}_{suffix}"] = model

    target_dir = config_file[: -len(".yaml")] if config_file.endswith(".yaml") else config_file + "_grid"
    os.makedirs(target_dir, exist_ok=True)
    write_text_atomic(os.path.join(target_dir, "dataset_config.yaml"),
                      yaml.safe_dump(all_datasets, default_flow_style=None, indent=4))
    write_text_atomic(os.path.join(target_dir, "model_config.yaml"),
                      yaml.safe_dump(all_expids, default_flow_style=None, indent=4))
    return target_dir


def prepare_grid_data(config_dir: str) -> list[str]:
    """Make every synthetic dataset the grid uses, once, before any run starts.

    The autotuner starts one ``run_expid.py`` per device at once: on a fresh clone each would
    generate the same synthetic dataset into the same folder at the same time. Returns the
    dataset folders.
    """
    from fuxictr_mmctr.pipeline.datasets import ensure_dataset

    with open(os.path.join(config_dir, "dataset_config.yaml"), encoding="utf-8") as handle:
        dataset_configs = yaml.safe_load(handle) or {}
    folders = []
    for dataset_id, params in dataset_configs.items():
        folders.append(ensure_dataset({"dataset_id": dataset_id, **params}))
    return folders


def run_grid(config_file: str, gpus: list[int], tag: str | None = None,
             script: str = "run_expid.py") -> str:
    """Expand the grid, make its data, and run every expid, one process per listed device at
    a time."""
    from fuxictr import autotuner

    config_dir = expand_tuner_config(config_file)
    prepare_grid_data(config_dir)
    autotuner.grid_search(config_dir, gpus, tag, script=script)
    return config_dir
