"""The synthetic generator: contract, determinism, oracle report, and the planted structure."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from fuxictr_mmctr import cli
from fuxictr_mmctr.data import synthetic
from fuxictr_mmctr.data.schema import (
    ITEM_EMB,
    ITEM_ID,
    ITEM_INFO,
    ITEM_SEQ,
    ITEM_TAGS,
    LABEL,
    LIKES_LEVEL,
    SPLITS,
    USER_ID,
    VIEWS_LEVEL,
    load_schema,
    pyarrow_schema,
    split_file,
)
from fuxictr_mmctr.data.synthetic import ORACLE_FILE, PRESETS, RAW_ITEM_FILE, TRUTH_FILE, generate
from fuxictr_mmctr.data.validate import validate_dataset
from fuxictr_mmctr.errors import UserError

TINY = PRESETS["tiny"]
#: tiny's items and users with larger valid/test splits, so AUC gaps are measured precisely.
MEDIUM = dataclasses.replace(TINY, name="medium", num_train=20_000, num_valid=20_000,
                             num_test=20_000)
PARTS = ("no_history", "no_multimodal", "no_item_id", "no_likes_views_cross",
         "no_history_levels")


def read(folder, table: str):
    return pq.read_table(os.path.join(folder, split_file(table)))


def as_matrix(table, column: str) -> np.ndarray:
    """A fixed-length list column as a ``(rows, width)`` array (no per-row Python work)."""
    values = table.column(column).combine_chunks()
    return values.flatten().to_numpy().reshape(len(values), -1)


def oracle(folder) -> dict:
    with open(os.path.join(folder, ORACLE_FILE), encoding="utf-8") as handle:
        return json.load(handle)


def file_hashes(folder) -> dict:
    hashes = {}
    for name in sorted(os.listdir(folder)):
        if name != ORACLE_FILE:  # oracle.json records the generation time
            with open(os.path.join(folder, name), "rb") as handle:
                hashes[name] = hashlib.sha256(handle.read()).hexdigest()
    return hashes


@pytest.fixture(scope="module")
def medium_dataset(tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("medium"))
    generate(MEDIUM, seed=11, out_dir=folder, verbose=False)
    return folder


# --- the data contract ---------------------------------------------------------------------

def test_files_have_the_schema_columns_types_and_sizes(tiny_dataset):
    schema = load_schema(tiny_dataset)
    assert schema == TINY.schema
    for table_name in SPLITS + (ITEM_INFO,):
        table = read(tiny_dataset, table_name)
        assert table.schema.equals(pyarrow_schema(schema, table_name), check_metadata=False)
        for column in schema.columns(table_name):
            if column.length is not None:
                lengths = pc.list_value_length(table.column(column.name)).to_numpy()
                assert np.all(lengths == column.length), (table_name, column.name)
    assert [read(tiny_dataset, split).num_rows for split in SPLITS] == [
        TINY.num_train, TINY.num_valid, TINY.num_test]
    assert read(tiny_dataset, ITEM_INFO).num_rows == schema.num_items + 1
    assert LABEL not in read(tiny_dataset, "test").column_names
    assert validate_dataset(tiny_dataset) == []


@pytest.mark.parametrize("split", SPLITS)
def test_rows_are_left_padded_and_ids_in_range(tiny_dataset, split):
    schema = TINY.schema
    table = read(tiny_dataset, split)
    item_seq = as_matrix(table, ITEM_SEQ)
    is_real = item_seq > 0
    # Left padding: once a position is real, every later (more recent) one is too.
    assert np.all(np.diff(is_real.astype(np.int8), axis=1) >= 0)
    assert item_seq.min() >= 0 and item_seq.max() <= schema.num_items
    target = table.column(ITEM_ID).to_numpy()
    assert target.min() >= 1 and target.max() <= schema.num_items
    user = table.column(USER_ID).to_numpy()
    assert user.min() >= 1 and user.max() < schema.user_vocab
    for level in (LIKES_LEVEL, VIEWS_LEVEL):
        values = table.column(level).to_numpy()
        assert values.min() >= 0 and values.max() < schema.level_vocab
        assert len(np.unique(values)) > 5
    if split != "test":
        assert set(np.unique(table.column(LABEL).to_numpy())) == {0, 1}


def test_history_lengths_look_like_microlens(tiny_dataset):
    history_len = (as_matrix(read(tiny_dataset, "train"), ITEM_SEQ) > 0).sum(axis=1)
    assert 4 <= np.median(history_len) <= 8
    assert 0 < np.mean(history_len == 0) < 0.1           # some rows have no history
    assert history_len.max() == TINY.schema.max_seq_len  # and some fill the sequence


def test_item_info_rows_are_items_and_row_zero_is_padding(tiny_dataset):
    schema = TINY.schema
    items = read(tiny_dataset, ITEM_INFO)
    assert np.array_equal(items.column(ITEM_ID).to_numpy(), np.arange(schema.item_vocab))
    tags = as_matrix(items, ITEM_TAGS)
    vectors = as_matrix(items, ITEM_EMB)
    assert not tags[0].any() and not vectors[0].any()
    tag_count = (tags[1:] > 0).sum(axis=1)
    assert tag_count.min() == 1 and tag_count.max() == schema.num_tags_per_item
    assert np.all(np.diff((tags[1:] > 0).astype(np.int8), axis=1) >= 0)  # left-padded
    assert tags.max() < schema.tag_vocab
    assert np.all(np.abs(vectors[1:]).sum(axis=1) > 0)
    variance = vectors[1:].var(axis=0)
    latent_dim = TINY.latent_dim
    # PCA-like: the leading dims carry most of the variance, and it decreases along the vector.
    assert variance[:latent_dim].min() > variance[latent_dim:].max()
    assert variance[latent_dim] > variance[-1]


# --- determinism, speed, files -------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    started = time.perf_counter()
    generate("tiny", seed=7, out_dir=str(tmp_path / "a"), verbose=False)
    assert time.perf_counter() - started < 5.0
    generate("tiny", seed=7, out_dir=str(tmp_path / "b"), verbose=False)
    generate("tiny", seed=8, out_dir=str(tmp_path / "c"), verbose=False)
    first, second, other = (file_hashes(tmp_path / name) for name in "abc")
    assert set(first) == {split_file(name) for name in SPLITS + (ITEM_INFO,)} | {
        "schema.json", TRUTH_FILE, RAW_ITEM_FILE}
    assert first == second
    for name in first:
        if name != "schema.json":
            assert first[name] != other[name], name


def test_interrupted_run_leaves_no_partial_file_and_no_stale_mix(tmp_path, monkeypatch):
    folder = str(tmp_path)
    generate("tiny", seed=1, out_dir=folder, verbose=False)
    calls = []
    real_split_table = synthetic._split_table

    def fail_on_second_block(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_split_table(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_split_table", fail_on_second_block)
    small_blocks = dataclasses.replace(TINY, block_rows=1000)   # train is written in 4 blocks
    with pytest.raises(KeyboardInterrupt):
        generate(small_blocks, seed=2, out_dir=folder, verbose=False)
    left = set(os.listdir(folder))
    assert not [name for name in left if name.startswith(".tmp")]
    # The new item tables are complete; the half-written train split and the old splits are gone.
    assert left == {split_file(ITEM_INFO), RAW_ITEM_FILE, "schema.json"}


def test_unknown_preset_and_bad_seed_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        generate("huge", seed=1, out_dir=str(tmp_path))
    with pytest.raises(UserError, match="seed"):
        generate("tiny", seed=-1, out_dir=str(tmp_path))


# --- the oracle ----------------------------------------------------------------------------

def test_oracle_report_matches_truth_file(tiny_dataset):
    report = oracle(tiny_dataset)
    assert report["preset"] == "tiny" and report["seed"] == 2025
    assert set(report["partial_oracle_auc"]) == set(PARTS)
    truth = pq.read_table(os.path.join(tiny_dataset, TRUTH_FILE)).to_pandas()
    for split, size in (("valid", TINY.num_valid), ("test", TINY.num_test)):
        rows = truth[truth["split"] == split]
        assert np.array_equal(rows["row"].to_numpy(), np.arange(size))
        assert rows["click_prob"].between(0, 1, inclusive="neither").all()
        auc = roc_auc_score(rows["label"], rows["click_prob"])
        assert report["oracle_auc"][split] == pytest.approx(auc, abs=1e-6)
        assert 0.6 < auc < 0.99
    valid_rows = truth[truth["split"] == "valid"]
    assert np.array_equal(valid_rows["label"].to_numpy(),
                          read(tiny_dataset, "valid").column(LABEL).to_numpy())
    assert 0.22 < report["positive_rate"]["train"] < 0.28


def test_every_part_matters_on_tiny(tiny_dataset):
    report = oracle(tiny_dataset)
    full = report["oracle_auc"]["valid"]
    partial = report["partial_oracle_auc"]
    assert full - partial["no_history"]["valid"] >= 0.03
    for part in PARTS:
        assert partial[part]["valid"] < full, part


def test_every_part_matters_with_precise_splits(medium_dataset):
    report = oracle(medium_dataset)
    for split in ("valid", "test"):
        full = report["oracle_auc"][split]
        assert 0.6 < full < 0.99
        partial = report["partial_oracle_auc"]
        assert full - partial["no_history"][split] >= 0.03, split
        for part in PARTS:
            assert full - partial[part][split] >= 0.005, (part, split)


# --- the planted structure, seen from the files alone --------------------------------------

def _unit(vectors: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norm, out=np.zeros_like(vectors), where=norm > 0)


def test_recent_history_vectors_predict_the_label(medium_dataset):
    vectors = as_matrix(read(medium_dataset, ITEM_INFO), ITEM_EMB).astype(np.float64)
    valid = read(medium_dataset, "valid")
    recent = as_matrix(valid, ITEM_SEQ)[:, -3:]             # the last 3 slots (row 0 is zeros)
    target = valid.column(ITEM_ID).to_numpy()
    similarity = np.sum(_unit(vectors[target]) * _unit(vectors[recent].sum(axis=1)), axis=1)
    assert roc_auc_score(valid.column(LABEL).to_numpy(), similarity) > 0.55


def test_likes_views_act_through_their_cross_only(medium_dataset):
    train = read(medium_dataset, "train")
    label = train.column(LABEL).to_numpy()
    middle = (TINY.schema.level_vocab - 1) / 2
    likes = train.column(LIKES_LEVEL).to_numpy() - middle
    views = train.column(VIEWS_LEVEL).to_numpy() - middle
    assert roc_auc_score(label, likes * views) > 0.55
    # No main effects: each level alone tells (almost) nothing; the little left is the chance
    # correlation of a few hundred items' base levels with their other effects.
    assert abs(roc_auc_score(label, likes) - 0.5) < 0.04
    assert abs(roc_auc_score(label, views) - 0.5) < 0.04


def test_cold_items_appear_in_valid_and_test(medium_dataset):
    train = read(medium_dataset, "train")
    seen = np.bincount(np.concatenate([train.column(ITEM_ID).to_numpy(),
                                       as_matrix(train, ITEM_SEQ).ravel()]),
                       minlength=TINY.schema.item_vocab)
    for split in ("valid", "test"):
        target = read(medium_dataset, split).column(ITEM_ID).to_numpy()
        cold_share = np.mean(seen[target] < 2)
        assert 0.01 < cold_share < 0.2, split


def test_tags_and_vectors_share_the_topics(tiny_dataset):
    items = read(tiny_dataset, ITEM_INFO)
    vectors = _unit(as_matrix(items, ITEM_EMB)[1:].astype(np.float64))
    tags = as_matrix(items, ITEM_TAGS)[1:]
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    rng = np.random.default_rng(0)
    stranger = rng.permutation(len(tags))

    def share_rate(other: np.ndarray) -> float:
        common = (tags[:, :, None] == tags[other][:, None, :]) & (tags[:, :, None] > 0)
        return float(common.any(axis=(1, 2)).mean())

    # Nearest neighbours by vector are mostly same-topic items, which draw from one tag block.
    assert share_rate(nearest) > max(3 * share_rate(stranger), share_rate(stranger) + 0.1)


# --- the command line ----------------------------------------------------------------------

def test_cli_module_writes_a_dataset(tmp_path):
    out = str(tmp_path / "cli")
    result = subprocess.run(
        [sys.executable, "-m", "fuxictr_mmctr.cli", "synth", "--preset", "tiny", "--seed", "3",
         "--out", out], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "oracle AUC valid" in result.stdout
    assert {split_file(name) for name in SPLITS + (ITEM_INFO,)} <= set(os.listdir(out))
    assert oracle(out)["seed"] == 3


def test_cli_main_exit_codes(tmp_path):
    out = str(tmp_path / "main")
    with pytest.raises(SystemExit) as done:
        cli.main(["synth", "--preset", "tiny", "--seed", "4", "--out", out])
    assert done.value.code == 0
    assert os.path.exists(os.path.join(out, ORACLE_FILE))
    with pytest.raises(SystemExit) as failed:
        cli.main(["synth", "--preset", "huge", "--out", out])
    assert failed.value.code not in (0, None)
