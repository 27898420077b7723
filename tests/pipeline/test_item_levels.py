"""The *_item_levels datasets and expids: the enriched item table is built on first use (synthetic)
or asked for with its command (real data), rebuilt when stale, and the models read the per-item
levels of every history item."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fuxictr_mmctr import cli
from fuxictr_mmctr.data.item_features import ITEM_LIKES_LEVEL, ITEM_VIEWS_LEVEL, LEVELS_ITEM_INFO
from fuxictr_mmctr.data.schema import ITEM_ID, ITEM_SEQ
from fuxictr_mmctr.data.synthetic import DERIVED_ENTRIES, PRESETS, RAW_ITEM_FILE, check_out_dir
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.pipeline import experiment
from fuxictr_mmctr.pipeline.datasets import ensure_dataset, item_table_spec
from tests.builders import inside, working_folder
from tests.conftest import TINY_SEED

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config")
MODELS = ("Transformer_DCN", "DIN", "QIN")
EXPIDS = [f"{model}_MicroLens_item_levels{suffix}" for model in MODELS
          for suffix in ("", "_demo", "_tiny")]


@pytest.mark.parametrize("expid", EXPIDS)
def test_every_item_levels_expid_loads_and_reads_the_enriched_table(expid):
    params = experiment.load_params(CONFIG_DIR, expid)
    assert params["dataset_id"].endswith("_item_levels")
    assert os.path.basename(params["item_info"]) == LEVELS_ITEM_INFO
    levels = [column for column in params["feature_cols"]
              if column["name"] == [ITEM_LIKES_LEVEL, ITEM_VIEWS_LEVEL]]
    assert levels and levels[0]["source"] == "item" and levels[0]["vocab_size"] == 11
    base = experiment.load_params(CONFIG_DIR, expid.replace("_item_levels", ""))
    differs = {key for key in set(base) | set(params) if base.get(key) != params.get(key)}
    assert differs == {"dataset_id", "model_id", "item_info", "item_table", "feature_cols"}


# ------------------------------------------------------------------------- ensure_dataset


def dataset_params(folder, synthetic=True):
    """Dataset params of the tiny data in ``folder`` with an enriched item table."""
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    params = {"dataset_id": "tiny_levels", "train_data": path("train.parquet"),
              "valid_data": path("valid.parquet"), "test_data": path("test.parquet"),
              "item_info": path(LEVELS_ITEM_INFO),
              "item_table": {"item_feature": path(RAW_ITEM_FILE),
                             "item_info": path("item_info.parquet")}}
    if synthetic:
        params.update(synthetic_preset="tiny", synthetic_seed=TINY_SEED)
    return params


@pytest.fixture()
def folder(tiny_dataset, tmp_path):
    target = str(tmp_path / "tiny")
    shutil.copytree(tiny_dataset, target)
    return target


def test_synthetic_table_is_built_once_and_again_when_a_source_changes(folder):
    params = dataset_params(folder)
    out = params["item_info"]
    ensure_dataset(params)
    assert pq.read_schema(out).names[-2:] == [ITEM_LIKES_LEVEL, ITEM_VIEWS_LEVEL]
    built = os.stat(out).st_mtime_ns
    ensure_dataset(params)
    assert os.stat(out).st_mtime_ns == built
    source = params["item_table"]["item_info"]
    later = os.stat(source).st_mtime_ns + 5_000_000_000
    os.utime(source, ns=(later, later))  # as when the dataset is generated again
    ensure_dataset(params)
    assert os.stat(out).st_mtime_ns != built


def test_synthetic_folder_with_the_table_is_still_its_own_dataset(folder):
    """``synth`` into the folder calls it up to date; the table is a derived entry."""
    ensure_dataset(dataset_params(folder))
    assert LEVELS_ITEM_INFO in DERIVED_ENTRIES
    assert check_out_dir(folder, PRESETS["tiny"], TINY_SEED, say=lambda _: None) is not None


def test_real_data_without_the_table_names_the_command_that_builds_it(folder, capsys):
    params = dataset_params(folder, synthetic=False)
    with pytest.raises(UserError) as error:
        ensure_dataset(params)
    message = str(error.value)
    assert f"{params['item_info']} not found; build it with: fuxictr-mmctr items" in message
    command = message.split("build it with: ")[1].split()
    with pytest.raises(SystemExit) as stop:
        cli.main(command[1:])
    assert stop.value.code == 0
    ensure_dataset(params)
    raw_file = params["item_table"]["item_feature"]
    shutil.move(raw_file, raw_file + ".away")  # the raw file may go once the table is built
    ensure_dataset(params)
    source = params["item_table"]["item_info"]
    later = os.stat(source).st_mtime_ns + 5_000_000_000
    os.utime(source, ns=(later, later))
    with pytest.raises(UserError, match="built from other versions of its sources .* and the "
                                        "raw item file .* is missing"):
        ensure_dataset(params)
    shutil.move(raw_file + ".away", raw_file)
    with pytest.raises(UserError, match="built from other versions of its sources .*; build it "
                                        "again with: fuxictr-mmctr items"):
        ensure_dataset(params)


def test_real_data_without_the_raw_file_says_where_it_comes_from(folder):
    params = dataset_params(folder, synthetic=False)
    os.remove(params["item_table"]["item_feature"])
    with pytest.raises(UserError, match="not found, and the raw item file .* is missing "
                                        r"\(item_feature.parquet of the challenge data"):
        ensure_dataset(params)


@pytest.mark.parametrize("block, message", [
    ("x.parquet", "must be a mapping"),
    ({"item_feature": "a.parquet"}, r"item_table.item_info must be a path"),
    ({"item_feature": "a.parquet", "item_info": "b.parquet", "whitten": True},
     "unknown key 'whitten'"),
    ({"item_feature": "a.parquet", "item_info": "b.parquet", "dim": 64}, "add vectors"),
    ({"item_feature": "a.parquet", "item_info": "b.parquet", "vectors": ["txt"]},
     "unknown modality 'txt'"),
    ({"item_feature": "a.parquet", "item_info": "./data/MicroLens_synth_tiny/"
                                                "item_info_levels.parquet"},
     "needs a path of its own"),
])
def test_a_bad_item_table_block_is_a_config_error(block, message):
    with pytest.raises(UserError, match=message):
        experiment.load_params(CONFIG_DIR, "DIN_MicroLens_item_levels_tiny",
                               overrides={"item_table": block})


def test_item_table_block_with_vectors():
    spec = item_table_spec({"dataset_id": "x", "item_info": "out.parquet",
                            "item_table": {"item_feature": "a.parquet", "item_info": "b.parquet",
                                           "vectors": "image,text", "dim": 32, "whiten": True}})
    assert spec.vectors.modalities == ("text", "image") and spec.vectors.dim == 32
    assert spec.vectors.whiten and spec.vectors.column == "item_emb_pca32"


# ------------------------------------------------------------------------- history levels


def level_embeddings(model):
    """Re-draw the item-level embeddings N(0, 1), so a level change moves the logit clearly."""
    layers = model.item_encoder.id_embeddings.embedding_layers
    with torch.no_grad():
        for name in (ITEM_LIKES_LEVEL, ITEM_VIEWS_LEVEL):
            layers[name].weight.normal_()


def pick_rows(item_seq: np.ndarray, item_id: np.ndarray):
    """``(item, row_with, row_without)``: an item in the history of ``row_with`` (not its target)
    that is neither in the history nor the target of ``row_without``."""
    for row in range(len(item_seq)):
        for item in item_seq[row][item_seq[row] > 0]:
            if item == item_id[row]:
                continue
            absent = np.flatnonzero(~(item_seq == item).any(axis=1) & (item_id != item))
            if len(absent):
                return int(item), row, int(absent[0])
    raise AssertionError("no usable rows")


@pytest.mark.parametrize("model_name", MODELS)
def test_changing_a_history_items_level_changes_only_the_rows_that_hold_it(
        tiny_dataset, tmp_path, model_name):
    workdir = working_folder(str(tmp_path), tiny_dataset)
    with inside(workdir):
        params = experiment.load_params("config", f"{model_name}_MicroLens_item_levels_tiny")
        params["model_root"] = str(tmp_path / "checkpoints")
        feature_map, catalogue = experiment.prepare(params)
        model = experiment.build_model(params, feature_map, catalogue)
        valid = catalogue.load_split(params["valid_data"])
        on_file = pq.read_table(params["item_info"]).column(ITEM_LIKES_LEVEL).to_numpy()
    table = model.item_encoder.item_table
    np.testing.assert_array_equal(table.column(ITEM_LIKES_LEVEL).numpy(), on_file)

    rows = np.arange(64)
    history = np.asarray(valid.columns[ITEM_SEQ][rows])[:, -model.max_len:]
    targets = np.asarray(valid.columns[ITEM_ID][rows])
    item, row_with, row_without = pick_rows(history, targets)
    batch = {name: torch.as_tensor(np.asarray(values[rows])).long()
             for name, values in valid.columns.items()}
    level_embeddings(model)
    model.eval()
    likes = table.column(ITEM_LIKES_LEVEL)
    original, changes = int(likes[item]), []
    with torch.no_grad():
        before = model(batch)["y_pred"].clone()
        # every other level: QIN's ReLU attention may give an item weight 0 at some of them
        for level in sorted(set(range(11)) - {original}):
            likes[item] = level
            after = model(batch)["y_pred"]
            changes.append(abs(float(after[row_with] - before[row_with])))
            assert torch.equal(after[row_without], before[row_without])
    assert max(changes) > 1e-4, changes
