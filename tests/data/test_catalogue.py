"""ItemCatalogue: one item-id mapping for the item table and every split; validation modes;
splits judged by the trained dataset's schema wherever they live."""
from __future__ import annotations

import logging
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.data import validate
from fuxictr_mmctr.data.catalogue import ItemCatalogue
from fuxictr_mmctr.data.feature_map import build_feature_map
from fuxictr_mmctr.data.id_remap import remap_for
from fuxictr_mmctr.data.loader import validation_mode
from fuxictr_mmctr.errors import UserError
from tests.builders import TINY, dataset_params, write_dataset, write_table


def catalogue_of(folder, **overrides) -> ItemCatalogue:
    """The catalogue the pipeline builds for a dataset folder (params overridden as given)."""
    params = dict(dataset_params(folder), **overrides)
    return ItemCatalogue.from_params(params, build_feature_map(params))


def gathered(catalogue, split):
    """Item features of a split's targets ``(N, ...)`` and histories ``(N, L, ...)``."""
    table = catalogue.item_table()
    target = table(torch.from_numpy(np.asarray(split.item_id, dtype=np.int64)))
    history = table(torch.from_numpy(np.asarray(split.item_seq, dtype=np.int64)))
    return target, history


def write_item_info(path, columns, order):
    """item_info with its rows stored in ``order`` (a permutation of the rows)."""
    write_table(path, {name: np.asarray(values)[order] for name, values in columns.items()},
                contract.pyarrow_schema(TINY, contract.ITEM_INFO))


@pytest.fixture
def dataset(tmp_path):
    folder = tmp_path / "ds"
    return folder, write_dataset(folder)


# Task 1: one mapping, independent of item_info's row order -----------------------------------


def test_shuffled_item_info_gathers_the_same_features_for_every_split_row(tmp_path):
    """Defect: an item_info stored in another row order was remapped in file order and gave
    every split row another item's tags and vector."""
    ordered, shuffled = tmp_path / "ordered", tmp_path / "shuffled"
    raw = write_dataset(ordered)
    write_dataset(shuffled)  # same seed: the same items and splits
    order = np.random.default_rng(1).permutation(TINY.item_vocab)
    write_item_info(shuffled / "item_info.parquet", raw["item_info"], order)
    assert pq.read_table(shuffled / "item_info.parquet")[contract.ITEM_ID][0].as_py() != 0

    reference, catalogue = catalogue_of(ordered), catalogue_of(shuffled)
    assert catalogue.remap is None and catalogue.num_rows == reference.num_rows
    for split in ("train", "valid", "test"):
        expected = gathered(reference, reference.load_split(ordered / f"{split}.parquet"))
        actual = gathered(catalogue, catalogue.load_split(shuffled / f"{split}.parquet"))
        for want, got in zip(expected, actual):
            for name in (contract.ITEM_TAGS, contract.ITEM_EMB):
                np.testing.assert_array_equal(got[name].numpy(), want[name].numpy())
    # and they are the item_info rows of those ids, not just equal to each other
    valid = catalogue.load_split(shuffled / "valid.parquet")
    target, _ = gathered(catalogue, valid)
    np.testing.assert_array_equal(target[contract.ITEM_EMB].numpy(),
                                  raw["item_info"][contract.ITEM_EMB][valid.item_id])


def test_remap_for_leaves_integer_ids_in_any_row_order_alone(dataset, tmp_path):
    """Defect: remap_for (used by models/base.py) remapped a reordered item_info in file order
    while the splits were loaded unmapped."""
    folder, raw = dataset
    write_item_info(tmp_path / "item_info.parquet", raw["item_info"],
                    np.arange(TINY.item_vocab)[::-1])
    assert remap_for(tmp_path / "item_info.parquet") is None
    assert remap_for(tmp_path / "item_info.parquet", item_vocab=TINY.item_vocab) is None


def test_sparse_integer_ids_below_the_vocabulary_need_no_remap(dataset):
    folder, raw = dataset
    keep = np.array([0, 17, 3, 9])  # ids 3, 9, 17 (and padding) out of a vocabulary of 31
    write_item_info(folder / "item_info.parquet", raw["item_info"], keep)
    catalogue = catalogue_of(folder)
    assert catalogue.remap is None and catalogue.num_rows == 18
    table = catalogue.item_table()
    assert table.num_rows == 18
    np.testing.assert_array_equal(table(torch.tensor([9]))[contract.ITEM_EMB].numpy(),
                                  raw["item_info"][contract.ITEM_EMB][[9]])


STRING_SCHEMA = contract.Schema(max_seq_len=3, num_items=3, num_tags_per_item=2, item_emb_dim=2,
                                tag_vocab=6)
STRING_ITEMS = {"v_a": ([0, 3], [2, 2]), "v_b": ([1, 2], [1, 1]), "v_c": ([4, 5], [3, 3])}


def write_string_dataset(folder, names):
    """item_info with string ids in the order ``names`` ("" = padding) and a test split."""
    folder.mkdir(parents=True, exist_ok=True)
    contract.save_schema(STRING_SCHEMA, folder)
    rows = [STRING_ITEMS.get(name, ([0, 0], [0, 0])) for name in names]
    write_table(folder / "item_info.parquet", {
        contract.ITEM_ID: np.array(names, dtype=object),
        contract.ITEM_TAGS: np.array([tags for tags, _ in rows]),
        contract.ITEM_EMB: np.array([vector for _, vector in rows], dtype=np.float32)})
    write_table(folder / "test.parquet", {
        contract.USER_ID: np.array([7, 8]),
        contract.ITEM_SEQ: [["", "v_c", "v_a"], ["v_b", "v_b", "v_c"]],
        contract.LIKES_LEVEL: np.array([1, 2]), contract.VIEWS_LEVEL: np.array([3, 4]),
        contract.ITEM_ID: np.array(["v_a", "v_c"], dtype=object)})


@pytest.mark.parametrize("names", [["", "v_b", "v_a", "v_c"], ["v_c", "v_a", "", "v_b"]])
def test_string_ids_map_the_same_in_any_item_info_order(tmp_path, names):
    """Defect: string ids were numbered in item_info's file order, so a reordered item_info
    gave another mapping (and another cache key)."""
    folder = tmp_path / "strings"
    write_string_dataset(folder, names)
    catalogue = catalogue_of(folder)
    assert catalogue.remap.keys.to_pylist() == ["v_a", "v_b", "v_c"]  # sorted: rows 1, 2, 3
    assert catalogue.num_rows == 4
    split = catalogue.load_split(folder / "test.parquet")
    np.testing.assert_array_equal(split.item_id, [1, 3])
    np.testing.assert_array_equal(split.item_seq, [[0, 3, 1], [2, 2, 3]])
    target, history = gathered(catalogue, split)
    np.testing.assert_array_equal(target[contract.ITEM_EMB].numpy(), [[2, 2], [3, 3]])
    np.testing.assert_array_equal(history[contract.ITEM_TAGS][1].numpy(), [[1, 2], [1, 2], [4, 5]])
    np.testing.assert_array_equal(history[contract.ITEM_EMB][0].numpy(), [[0, 0], [3, 3], [2, 2]])


def test_string_ids_remap_fingerprint_ignores_row_order(tmp_path):
    write_string_dataset(tmp_path / "a", ["", "v_b", "v_a", "v_c"])
    write_string_dataset(tmp_path / "b", ["v_c", "v_a", "v_b"])
    first, second = catalogue_of(tmp_path / "a"), catalogue_of(tmp_path / "b")
    assert first.remap.fingerprint() == second.remap.fingerprint()


def test_more_items_than_the_item_id_vocabulary_is_user_error(tmp_path):
    folder = tmp_path / "strings"
    write_string_dataset(folder, ["", "v_b", "v_a", "v_c"])
    params = dataset_params(folder)
    params["feature_cols"][3] = dict(params["feature_cols"][3], vocab_size=3)
    with pytest.raises(UserError, match=r"item_info.parquet, column item_id: 3 items need an "
                                        r"item_id vocab_size of at least 4"):
        ItemCatalogue.from_params(params, build_feature_map(params))


def beyond_item_table(folder, raw, column, row, value):
    """Keep item_info's first 20 items, keep the split's ids below 20, put ``value`` at ``row``."""
    write_item_info(folder / "item_info.parquet", raw["item_info"], np.arange(20))
    columns = dict(raw["valid"])
    columns[contract.ITEM_ID] = 1 + columns[contract.ITEM_ID] % 19
    history = columns[contract.ITEM_SEQ]
    columns[contract.ITEM_SEQ] = np.where(history > 0, 1 + history % 19, 0)
    if column == contract.ITEM_ID:
        columns[contract.ITEM_ID][row] = value
    else:
        columns[contract.ITEM_SEQ][row, -1] = value
    write_table(folder / "valid.parquet", columns, contract.pyarrow_schema(TINY, "valid"))


@pytest.mark.parametrize("validation", ["strict", "warn", "off"])
@pytest.mark.parametrize("column, row", [(contract.ITEM_ID, 3), (contract.ITEM_SEQ, 6)])
def test_split_id_beyond_the_item_table_is_one_line_user_error(dataset, validation, column, row):
    """Defect: only the schema's vocabulary (31) bounded split ids, so with a 20-row item_info
    id 25 passed and gathered out of the table."""
    folder, raw = dataset
    beyond_item_table(folder, raw, column, row, 25)
    catalogue = catalogue_of(folder, validation=validation)
    assert catalogue.num_rows == 20
    with pytest.raises(UserError, match=rf"valid.parquet, column {column}, row {row}: item id 25 "
                                        rf"is (beyond|outside) item_info \(20 rows\)") as error:
        catalogue.load_split(folder / "valid.parquet")
    assert "\n" not in str(error.value)


def test_split_id_beyond_the_item_table_stops_a_cached_load_too(dataset):
    """The cache of a split does not know the item_info it meets next: the bound runs on it."""
    folder, raw = dataset
    beyond_item_table(folder, raw, contract.ITEM_SEQ, 6, 25)
    full = dict(raw["item_info"])
    write_item_info(folder / "full_item_info.parquet", full, np.arange(TINY.item_vocab))
    big = catalogue_of(folder, item_info=str(folder / "full_item_info.parquet"))
    assert not big.load_split(folder / "valid.parquet").from_cache
    small = catalogue_of(folder)
    with pytest.raises(UserError, match=r"column item_seq, row 6: item id 25 is beyond"):
        small.load_split(folder / "valid.parquet")


# Task 2: validation modes -------------------------------------------------------------------


def write_not_left_padded(folder, raw):
    """test.parquet whose row 2 history has a padding 0 after an item: the validator's finding,
    harmless to the model (it masks by ``item_seq > 0``)."""
    columns = dict(raw["test"])
    history = columns[contract.ITEM_SEQ].copy()
    history[2] = [0, 5, 0, 3, 4, 6, 7, 8]
    columns[contract.ITEM_SEQ] = history
    write_table(folder / "test.parquet", columns, contract.pyarrow_schema(TINY, "test"))


def write_label_two(folder, raw):
    columns = dict(raw["valid"])
    columns[contract.LABEL] = columns[contract.LABEL].copy()
    columns[contract.LABEL][4] = 2
    write_table(folder / "valid.parquet", columns, contract.pyarrow_schema(TINY, "valid"))


WARNINGS = [
    ("test", write_not_left_padded, r"test.parquet, column item_seq, row 2: not left-padded"),
    ("valid", write_label_two, r"valid.parquet, column label, row 4: label is 2"),
]


@pytest.mark.parametrize("split, write, message", WARNINGS)
def test_warn_logs_validator_problems_and_loads(dataset, caplog, split, write, message):
    folder, raw = dataset
    write(folder, raw)
    with pytest.raises(UserError, match=message):
        catalogue_of(folder).load_split(folder / f"{split}.parquet")  # strict: the default
    with caplog.at_level(logging.WARNING):
        loaded = catalogue_of(folder, validation="warn").load_split(folder / f"{split}.parquet")
    assert loaded.num_rows == 50
    lines = [record.getMessage() for record in caplog.records
             if record.levelno == logging.WARNING]
    assert len(lines) == 1 and lines[0].startswith("data validation: ")
    assert re.search(message, lines[0])


def test_warn_cache_is_not_served_to_strict(dataset, caplog):
    """A cache written under warn holds data that failed validation: strict reads it again."""
    folder, raw = dataset
    write_not_left_padded(folder, raw)
    catalogue_of(folder, validation="warn").load_split(folder / "test.parquet")
    with pytest.raises(UserError, match="not left-padded"):
        catalogue_of(folder).load_split(folder / "test.parquet")


def test_warn_caps_the_logged_lines(dataset, caplog, monkeypatch):
    folder, _ = dataset
    problems = [f"test.parquet, column c{i}, row {i}: problem" for i in range(25)]
    monkeypatch.setattr(validate, "validate_table", lambda *args, **kwargs: problems)
    with caplog.at_level(logging.WARNING):
        catalogue_of(folder, validation="warn").load_split(folder / "test.parquet")
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 21 and lines[-1].startswith("data validation: and 5 more problems")


def test_off_skips_the_validator(dataset, monkeypatch):
    folder, raw = dataset
    write_not_left_padded(folder, raw)

    def must_not_run(*args, **kwargs):
        raise AssertionError("validator ran under validation: off")

    monkeypatch.setattr(validate, "validate_table", must_not_run)
    loaded = catalogue_of(folder, validation="off").load_split(folder / "test.parquet")
    np.testing.assert_array_equal(loaded.item_seq[2], [0, 5, 0, 3, 4, 6, 7, 8])
    # YAML reads an unquoted `validation: off` as False
    assert catalogue_of(folder, validation=False).validation == "off"


@pytest.mark.parametrize("validation", ["warn", "off"])
@pytest.mark.parametrize("column, value, message", [
    (contract.ITEM_SEQ, [1, 2], r"column item_seq, row 6: list has length 2, expected 8"),
    (contract.LIKES_LEVEL, 14, r"column likes_level, row 6: value 14 is out of range"),
    (contract.USER_ID, None, r"column user_id, row 6: missing value"),
])
def test_corrupting_problems_stop_the_run_in_every_mode(dataset, validation, column, value,
                                                        message):
    folder, raw = dataset
    columns = {name: list(values) for name, values in raw["test"].items()}
    columns[column][6] = value
    write_table(folder / "test.parquet", columns)
    with pytest.raises(UserError, match=message) as error:
        catalogue_of(folder, validation=validation).load_split(folder / "test.parquet")
    assert "\n" not in str(error.value)


def test_nan_vector_in_item_info_stops_the_run_in_every_mode(dataset):
    folder, raw = dataset
    vectors = raw["item_info"][contract.ITEM_EMB].copy()
    vectors[5, 3] = np.inf
    write_item_info(folder / "item_info.parquet",
                    dict(raw["item_info"], **{contract.ITEM_EMB: vectors}), np.arange(31))
    with pytest.raises(UserError, match=r"item_info.parquet, column item_emb_d128, row 5: NaN"):
        catalogue_of(folder, validation="off").item_table()


def test_unknown_validation_mode_is_user_error(dataset):
    with pytest.raises(UserError, match=r"validation 'loud' is not one of strict, warn, off"):
        validation_mode({"validation": "loud"})
    assert validation_mode({}) == "strict" and validation_mode({"validation": "WARN"}) == "warn"
    folder, _ = dataset
    with pytest.raises(UserError, match=r"not one of strict, warn, off"):
        catalogue_of(folder, validation="loud")


# Task 3: the trained dataset's schema, wherever the split lives ------------------------------


def test_split_elsewhere_is_judged_by_the_dataset_schema(dataset, tmp_path):
    """Defect: a parquet outside the dataset folder fell back to the MicroLens sizes and was
    rejected ("list has length 8, expected 100")."""
    folder, raw = dataset
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(folder / "test.parquet", elsewhere / "x.parquet")
    assert not (elsewhere / contract.SCHEMA_FILE).exists()
    catalogue = catalogue_of(folder)
    assert catalogue.schema == TINY
    split = catalogue.load_split(elsewhere / "x.parquet")
    np.testing.assert_array_equal(split.item_seq, raw["test"][contract.ITEM_SEQ])
    assert not split.has_labels
