"""Make sure an experiment's data is there: generate synthetic presets, explain real data.

A dataset config may also name an enriched item table (``fuxictr-mmctr items``) as its
``item_info`` and say how it is built::

    item_info: ./data/X/item_info_levels.parquet
    item_table: {item_feature: ./data/X/item_feature.parquet, item_info: ./data/X/item_info.parquet}
    # optional: vectors: [text, image], dim: 128, whiten: False (the PCA vectors)

:func:`ensure_dataset` then checks the base files (``item_table.item_info`` stands for
``item_info``), and the enriched table: a synthetic dataset builds it on first use and again
whenever it is stale (a source file changed since, or the options did); real data gets a
one-line error holding the ``fuxictr-mmctr items`` command that builds it.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from fuxictr_mmctr.data import schema
from fuxictr_mmctr.errors import UserError, did_you_mean

REAL_DATA_URL = "https://recsys.westlake.edu.cn/MicroLens_1M_MMCTR"
SPLIT_KEYS = {"train": "train_data", "valid": "valid_data", "test": "test_data"}
#: Seed of a synthetic dataset whose config has no ``synthetic_seed``.
DEFAULT_SYNTHETIC_SEED = 2025
#: Keys of a dataset config's ``item_table`` block.
ITEM_TABLE_KEYS = ("item_feature", "item_info", "vectors", "dim", "whiten", "vectors_file")


def dataset_folder(params: dict) -> str:
    """Folder holding the dataset's parquet files (the folder of ``train_data``)."""
    return os.path.dirname(os.path.abspath(params["train_data"]))


def ensure_dataset(params: dict) -> str:
    """Return the dataset folder, generating it first for synthetic datasets.

    A dataset config with ``synthetic_preset`` (and optionally ``synthetic_seed``) is generated
    on first use. A real dataset whose files are missing is a :class:`UserError` that says
    where to get the files and how to run the demo instead. With an ``item_table`` block the
    enriched item table is then made current too (see the module docstring).
    """
    folder = dataset_folder(params)
    table = item_table_spec(params)
    base_files = [table.item_info] if table else [params["item_info"]]
    if table is not None and params.get("synthetic_preset"):
        base_files.append(table.item_feature)  # the generator writes it
    _ensure_base_files(params, folder, base_files)
    if table is not None:
        ensure_item_table(params, table)
    return folder


def _ensure_base_files(params: dict, folder: str, item_files: list) -> None:
    """The splits and ``item_files`` (item_info; for an enriched table its base item_info, and
    the raw item file of a synthetic dataset) are there: generated (or made again when stale)
    for a synthetic dataset, else an error saying where to get them."""
    paths = [params[key] for key in SPLIT_KEYS.values() if params.get(key)]
    paths += item_files
    missing = [path for path in paths if not os.path.exists(path)]
    preset = params.get("synthetic_preset")
    if not missing and not (preset and _synthetic_is_stale(params, folder)):
        return
    if preset:
        from fuxictr_mmctr.data.synthetic import generate

        _check_generated_paths(params, folder, missing)

        seed = synthetic_seed(params)
        logging.info("Generating synthetic dataset preset=%s seed=%d into %s", preset, seed, folder)
        generate(preset, seed=seed, out_dir=folder, verbose=True)
        return
    raise UserError(
        f"dataset {params['dataset_id']}: {missing[0]} not found. Download MicroLens_1M_x1 from "
        f"{REAL_DATA_URL} and unzip it into {folder}/ (train/valid/test/item_info .parquet), or try "
        f"the synthetic demo: python run_expid.py --expid Transformer_DCN_MicroLens_demo"
    )


def _check_generated_paths(params: dict, folder: str, missing: list) -> None:
    """Every missing file of a synthetic dataset is one the generator writes into ``folder``:
    a mistyped path is reported before the whole folder is generated (again) in vain."""
    from fuxictr_mmctr.data.synthetic import OUTPUT_FILES

    made = {os.path.join(folder, name) for name in OUTPUT_FILES}
    for path in missing:
        if os.path.abspath(path) in made:
            continue
        keys = [key for key in (*SPLIT_KEYS.values(), "item_info")
                if params.get(key) == path] or ["item_table"]
        raise UserError(f"dataset {params['dataset_id']}: {keys[0]} {path} not found, and the "
                        f"synthetic preset {params['synthetic_preset']} does not make it (it "
                        f"makes {', '.join(OUTPUT_FILES[:4])} in {folder})"
                        f"{did_you_mean(os.path.basename(path), OUTPUT_FILES)}")


@dataclass(frozen=True)
class ItemTableSpec:
    """A dataset's ``item_table`` block: the raw item file, the base item_info and the PCA
    vector options (``None``: levels only)."""

    item_feature: str
    item_info: str
    vectors: object = None   # fuxictr_mmctr.data.item_features.VectorOptions or None
    vectors_file: str | None = None


def item_table_spec(params: dict) -> ItemTableSpec | None:
    """The checked ``item_table`` block of a dataset config; ``None`` when there is none."""
    block = params.get("item_table")
    if block is None:
        return None
    where = f"dataset {params.get('dataset_id')}: item_table"
    if not isinstance(block, dict):
        raise UserError(f"{where} must be a mapping with item_feature and item_info, got "
                        f"{block!r}")
    unknown = sorted(set(block) - set(ITEM_TABLE_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; known keys: "
                        f"{', '.join(ITEM_TABLE_KEYS)}")
    for key in ("item_feature", "item_info"):
        if not isinstance(block.get(key), str) or not block[key].strip():
            raise UserError(f"{where}.{key} must be a path (string), got {block.get(key)!r}")
    if os.path.abspath(block["item_info"]) == os.path.abspath(str(params.get("item_info"))):
        raise UserError(f"{where}.item_info is the dataset's own item_info; the enriched table "
                        f"needs a path of its own (e.g. item_info_levels.parquet)")
    vectors = _vector_options(block, where)
    vectors_file = block.get("vectors_file")
    if vectors_file is not None and (vectors is None or not isinstance(vectors_file, str)):
        raise UserError(f"{where}.vectors_file must be a path and goes with vectors, got "
                        f"{vectors_file!r}")
    return ItemTableSpec(block["item_feature"], block["item_info"], vectors, vectors_file)


def _vector_options(block: dict, where: str):
    """``VectorOptions`` of an ``item_table`` block, or ``None`` without ``vectors``."""
    from fuxictr_mmctr.data.item_features import DEFAULT_DIM, VectorOptions

    modalities = block.get("vectors")
    if modalities is None:
        if block.get("dim") is not None or block.get("whiten"):
            raise UserError(f"{where}: dim and whiten shape the PCA vectors; add vectors: "
                            f"[text, image]")
        return None
    if isinstance(modalities, str):
        modalities = [name.strip() for name in modalities.split(",")]
    if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
        raise UserError(f"{where}.vectors must be a list of modalities (text, image), got "
                        f"{modalities!r}")
    whiten = block.get("whiten", False)
    if not isinstance(whiten, bool):
        raise UserError(f"{where}.whiten must be True or False, got {whiten!r}")
    dim = block.get("dim", DEFAULT_DIM)
    return VectorOptions(tuple(modalities), dim=DEFAULT_DIM if dim is None else dim, whiten=whiten)


def ensure_item_table(params: dict, spec: ItemTableSpec) -> None:
    """The enriched item table ``params['item_info']`` is current: built (again) for a
    synthetic dataset; for real data a missing or stale table is an error with the command."""
    from fuxictr_mmctr.data.item_features import build_item_table, is_current, items_command

    out = params["item_info"]
    if is_current(out, spec.item_feature, spec.item_info, spec.vectors, spec.vectors_file):
        return
    if params.get("synthetic_preset"):
        logging.info("Building the item table %s from %s", out, spec.item_feature)
        build_item_table(spec.item_feature, spec.item_info, out, vectors=spec.vectors,
                         vectors_file=spec.vectors_file)
        return
    command = items_command(spec.item_feature, spec.item_info, out, spec.vectors,
                            spec.vectors_file)
    where = f"dataset {params['dataset_id']}"
    problem = (f"{out} not found" if not os.path.exists(out) else
               f"{out} was built from other versions of its sources or with other options (a "
               f"source file changed since)")
    if not os.path.exists(spec.item_feature):
        raise UserError(f"{where}: {problem}, and the raw item file {spec.item_feature} it is "
                        f"built from is missing (item_feature.parquet of the challenge data, "
                        f"{REAL_DATA_URL}); put it there, then run: {command}")
    again = "build it" if not os.path.exists(out) else "build it again"
    raise UserError(f"{where}: {problem}; {again} with: {command}")


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


def oracle_report(params: dict) -> dict | None:
    """The ``oracle.json`` of a synthetic dataset (beside its ``train_data``); None for real
    data."""
    path = os.path.join(dataset_folder(params), "oracle.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def oracle_auc(params: dict, split: str = "valid"):
    """Oracle AUC of a synthetic dataset's ``split`` from its ``oracle.json``; None for real data."""
    report = oracle_report(params)
    return None if report is None else report.get("oracle_auc", {}).get(split)


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
