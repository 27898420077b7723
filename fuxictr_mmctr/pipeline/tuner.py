"""Hyperparameter grids with ``fuxictr.autotuner``, with dataset-level keys made to work.

fuxictr 2.3.10's ``enumerate_params`` keys every dataset combination by the bare dataset_id when
the dataset config says ``rebuild_dataset: False`` (our configs do: the loader caches its own
arrays). Tuning a dataset-level key (e.g. ``max_len`` declared in the dataset config, or a
feature spec) then silently keeps only the last value. We inline the base configs into a
temporary tuner file with ``rebuild_dataset`` switched on for such grids, so that each dataset
combination gets its own hashed dataset_id, and let the autotuner do the rest.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import yaml

from fuxictr_mmctr.errors import UserError


def _read_tuner_config(config_file: str) -> dict:
    if not os.path.exists(config_file):
        raise UserError(f"tuner config {config_file} not found")
    with open(config_file, encoding="utf-8") as handle:
        config = yaml.safe_load(handle) or {}
    for key in ("base_expid", "tuner_space"):
        if key not in config:
            raise UserError(f"{config_file}: missing key {key!r}")
    return config


def expand_tuner_config(config_file: str) -> str:
    """Write the grid's ``dataset_config.yaml``/``model_config.yaml``; return their folder.

    The folder is ``config_file`` without ``.yaml`` (as fuxictr does).
    """
    from fuxictr import autotuner
    from fuxictr.utils import load_dataset_config, load_model_config

    config_file = os.path.abspath(config_file)
    config = _read_tuner_config(config_file)
    base_dir = config.get("base_config", os.path.dirname(config_file))
    if not os.path.isabs(base_dir):
        base_dir = os.path.abspath(base_dir)
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

    unknown = set(config["tuner_space"]) - set(model_params) - set(dataset_params)
    if unknown:
        raise UserError(f"{config_file}: tuner_space keys not in the base configs: {sorted(unknown)}")
    if set(config["tuner_space"]) & set(dataset_params):
        dataset_params["rebuild_dataset"] = True   # one hashed dataset_id per combination
    dataset_params.setdefault("data_format", "parquet")

    inlined = dict(config)
    inlined["dataset_id"] = dataset_id
    inlined["model_config"] = {expid: model_params}
    inlined["dataset_config"] = {dataset_id: dataset_params}
    target_dir = config_file[: -len(".yaml")] if config_file.endswith(".yaml") else config_file + "_grid"
    with tempfile.TemporaryDirectory() as scratch:
        scratch_file = os.path.join(scratch, os.path.basename(target_dir) + ".yaml")
        with open(scratch_file, "w", encoding="utf-8") as handle:
            yaml.safe_dump(inlined, handle, sort_keys=False)
        generated = autotuner.enumerate_params(scratch_file)
        if os.path.exists(target_dir):
            shutil.rmtree(target_dir)
        shutil.move(generated, target_dir)
    return target_dir


def run_grid(config_file: str, gpus: list[int], tag: str | None = None,
             script: str = "run_expid.py") -> str:
    """Expand the grid and run every expid, one process per listed device at a time."""
    from fuxictr import autotuner

    config_dir = expand_tuner_config(config_file)
    autotuner.grid_search(config_dir, gpus, tag, script=script)
    return config_dir
