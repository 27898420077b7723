"""Make sure an experiment's data is there: generate synthetic presets, explain real data."""
from __future__ import annotations

import json
import logging
import os

from fuxictr_mmctr.data import schema
from fuxictr_mmctr.errors import UserError

REAL_DATA_URL = "https://recsys.westlake.edu.cn/MicroLens_1M_MMCTR"
SPLIT_KEYS = {"train": "train_data", "valid": "valid_data", "test": "test_data"}
#: Seed of a synthetic dataset whose config has no ``synthetic_seed``.
DEFAULT_SYNTHETIC_SEED = 2025


def dataset_folder(params: dict) -> str:
    """Folder holding the dataset's parquet files (the folder of ``train_data``)."""
    return os.path.dirname(os.path.abspath(params["train_data"]))


def ensure_dataset(params: dict) -> str:
    """Return the dataset folder, generating it first for synthetic datasets.

    A dataset config with ``synthetic_preset`` (and optionally ``synthetic_seed``) is generated
    on first use. A real dataset whose files are missing is a :class:`UserError` that says
    where to get the files and how to run the demo instead.
    """
    folder = dataset_folder(params)
    paths = [params[key] for key in SPLIT_KEYS.values() if params.get(key)]
    paths.append(params["item_info"])
    missing = [path for path in paths if not os.path.exists(path)]
    preset = params.get("synthetic_preset")
    if not missing and not (preset and _synthetic_is_stale(params, folder)):
        return folder
    if preset:
        from fuxictr_mmctr.data.synthetic import generate

        seed = synthetic_seed(params)
        logging.info("Generating synthetic dataset preset=%s seed=%d into %s", preset, seed, folder)
        generate(preset, seed=seed, out_dir=folder, verbose=True)
        return folder
    raise UserError(
        f"dataset {params['dataset_id']}: {missing[0]} not found. Download MicroLens_1M_x1 from "
        f"{REAL_DATA_URL} and unzip it into {folder}/ (train/valid/test/item_info .parquet), or try "
        f"the synthetic demo: python run_expid.py --expid Transformer_DCN_MicroLens_demo"
    )


def synthetic_seed(params: dict) -> int:
    """The seed a synthetic dataset config asks for."""
    return int(params.get("synthetic_seed", DEFAULT_SYNTHETIC_SEED))


def _synthetic_is_stale(params: dict, folder: str) -> bool:
    """Whether a generated dataset differs from what its config asks for now.

    Compares the seed and the generator version in ``oracle.json`` and the train row count
    (parquet metadata, no data read) with the preset, so data made by an older release of a
    preset is made again rather than silently reused.
    """
    import pyarrow.parquet as pq

    from fuxictr_mmctr.data.synthetic import GENERATOR_VERSION, PRESETS

    preset = PRESETS.get(params["synthetic_preset"])
    if preset is None:
        return True  # generate() names the unknown preset in its error
    try:
        with open(os.path.join(folder, "oracle.json"), encoding="utf-8") as handle:
            report = json.load(handle)
        train_rows = pq.ParquetFile(params["train_data"]).metadata.num_rows
    except (OSError, ValueError):
        return True
    stale = (report.get("preset") != preset.name
             or report.get("seed") != synthetic_seed(params)
             or report.get("generator_version") != GENERATOR_VERSION
             or train_rows != preset.split_rows("train"))
    if stale:
        logging.info("Synthetic dataset in %s does not match preset=%s seed=%s: making it again",
                     folder, preset.name, synthetic_seed(params))
    return stale


def oracle_auc(params: dict, split: str = "valid"):
    """Oracle AUC of a synthetic dataset's ``split`` from its ``oracle.json``; None for real data."""
    path = os.path.join(dataset_folder(params), "oracle.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle).get("oracle_auc", {}).get(split)


def has_labels(path: str) -> bool:
    """Whether a parquet split carries the label column (the challenge test split does not)."""
    import pyarrow.parquet as pq

    return schema.LABEL in pq.read_schema(path).names


def synthetic_test_labels(params: dict):
    """Test labels ``(N,)`` of a synthetic dataset from its ``truth.parquet``; ``None`` for data
    without a truth file (the real challenge data). Read by the pipeline only, to report a test
    AUC: no model ever sees it."""
    from fuxictr_mmctr.data.scoring import TRUTH_FILE, load_test_labels

    folder = dataset_folder(params)
    if not os.path.exists(os.path.join(folder, TRUTH_FILE)):
        return None
    return load_test_labels(folder)
