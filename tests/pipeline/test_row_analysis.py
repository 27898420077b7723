"""Per-row analysis: slices, the paired bootstrap over users, and the training-free baselines."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.pipeline import row_analysis as ra
from tests.builders import write_table

#: Item vectors of the hand-made folder (D = 2), row = item id; item 5 is a zero vector.
VECTORS = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [2, 0], [0, 0]], dtype=np.float32)
HAND = contract.Schema(max_seq_len=3, num_items=5, num_tags_per_item=1, item_emb_dim=2,
                       tag_vocab=3, level_vocab=11, user_vocab=10)


def write_hand_folder(folder) -> str:
    """Three users. Train item sets: user 1 {1, 2, 3} (3 a positive target; 4 only a negative
    one), user 2 {2, 3}, user 3 {} (one row, empty history, negative). Popularity: item 1: 1,
    items 2 and 3: 2, items 4 and 5: 0; head = {2, 3} (4 of 5 occurrences), tail = {1}."""
    os.makedirs(folder, exist_ok=True)
    splits = {
        "train": dict(user_id=[1, 1, 2, 3], item_seq=[[0, 1, 2], [1, 2, 3], [0, 0, 2], [0, 0, 0]],
                      likes_level=[1, 2, 3, 4], views_level=[0, 0, 0, 0], item_id=[3, 4, 3, 1],
                      label=[1, 0, 1, 0]),
        "valid": dict(user_id=[1, 2, 3, 2], item_seq=[[1, 2, 3], [0, 0, 2], [0, 0, 0], [0, 3, 2]],
                      likes_level=[5, 3, 7, 0], views_level=[0, 0, 0, 0], item_id=[2, 1, 4, 4],
                      label=[1, 0, 1, 0]),
        "test": dict(user_id=[3], item_seq=[[0, 2, 3]], likes_level=[9], views_level=[0],
                     item_id=[3]),
    }
    for split, columns in splits.items():
        columns = {name: np.array(values) for name, values in columns.items()}
        write_table(os.path.join(folder, contract.split_file(split)), columns,
                    contract.pyarrow_schema(HAND, split))
    write_table(os.path.join(folder, "item_info.parquet"),
                {contract.ITEM_ID: np.arange(6), contract.ITEM_TAGS: np.zeros((6, 1), int),
                 contract.ITEM_EMB: VECTORS}, contract.pyarrow_schema(HAND, "item_info"))
    return str(folder)


@pytest.fixture
def hand_folder(tmp_path):
    return write_hand_folder(tmp_path / "hand")


# ---------------------------------------------------------------------- slices
def test_history_buckets_by_real_items():
    lengths = np.array([0, 1, 2, 3, 4, 7, 8, 15, 16, 100])
    names = [ra.HISTORY_BUCKETS[i] for i in ra.history_buckets(lengths)]
    assert names == ["0", "1", "2-3", "2-3", "4-7", "4-7", "8-15", "8-15", "16+", "16+"]


def test_head_is_half_of_the_occurrences_and_ties_stay_together():
    assert ra.head_items(np.array([0, 3, 3, 1, 1])).tolist() == [False, True, True, False, False]
    # Four items tied at the threshold: all head, whatever their order.
    assert ra.head_items(np.array([0, 2, 2, 2, 2])).tolist() == [False, True, True, True, True]
    assert ra.head_items(np.array([0, 10, 1, 1, 1])).tolist() == [False, True, False, False, False]
    assert not ra.head_items(np.zeros(4, dtype=np.int64)).any()


def test_slices_of_the_hand_made_folder(hand_folder):
    data = ra.DatasetRows(hand_folder)
    assert data.popularity.tolist() == [0, 1, 2, 2]   # items 4 and 5: beyond the train ids
    slices = data.slices("valid")
    masks = {kind: {name: np.flatnonzero(mask).tolist() for name, mask in buckets.items()}
             for kind, buckets in slices.items()}
    assert masks["history_length"] == {"0": [2], "1": [1], "2-3": [0, 3], "4-7": [], "8-15": [],
                                       "16+": []}
    # Item 4 was a train target only as a negative: cold.
    assert masks["popularity"] == {"cold": [2, 3], "tail": [1], "head": [0]}
    aucs = ra.slice_aucs(data.split("valid").label, np.array([0.9, 0.2, 0.4, 0.3]), slices)
    assert aucs["popularity"]["cold"] == {"auc": 1.0, "rows": 2}
    assert aucs["popularity"]["head"] == {"auc": None, "rows": 1}       # one class
    assert aucs["history_length"]["4-7"] == {"auc": None, "rows": 0}    # no rows


def test_no_zero_bucket_without_empty_histories(hand_folder):
    data = ra.DatasetRows(hand_folder)
    valid = data.split("valid")
    keep = [0, 1, 3]                                           # row 2 has an empty history
    rows = ra.SplitRows(valid.path, valid.user_id[keep], valid.item_seq[keep],
                        valid.item_id[keep], valid.likes_level[keep], valid.label[keep])
    assert list(ra.split_slices(rows, data.popularity)["history_length"]) == [
        "1", "2-3", "4-7", "8-15", "16+"]


# ---------------------------------------------------------------------- bootstrap
def test_weighted_auc_is_sklearns_with_ties_and_weights():
    rng = np.random.default_rng(7)
    for trial in range(6):
        labels = rng.integers(0, 2, 400)
        scores = (rng.integers(0, 5, 400).astype(float) if trial % 2
                  else rng.normal(size=400))                    # heavy ties, or none
        weights = rng.integers(0, 4, 400) if trial < 4 else rng.random(400)
        expected = roc_auc_score(labels, scores, sample_weight=weights)
        assert ra.weighted_auc(labels, scores, weights) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(ra.weighted_auc([1, 1, 0], [0.1, 0.2, 0.3], [1, 1, 0]))


def test_every_run_on_the_split_sees_the_same_resamples():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 60, 500)
    labels = rng.integers(0, 2, 500)
    first = np.concatenate(list(ra.resample_counts(60, resamples=30)))
    again = np.concatenate(list(ra.resample_counts(60, resamples=30, chunk=7)))
    assert first.shape == (30, 60) and (first.sum(axis=1) == 60).all()
    assert np.array_equal(first, again)          # the blocks never change the draws
    assert not np.array_equal(first[0], first[1])
    _, user_row = np.unique(users, return_inverse=True)
    for scores in (rng.random(500), rng.integers(0, 3, 500).astype(float)):
        aucs = ra.bootstrap_aucs(labels, scores, users, resamples=30)
        expected = [roc_auc_score(labels, scores, sample_weight=first[r][user_row])
                    for r in range(30)]
        np.testing.assert_allclose(aucs, expected, atol=1e-12)
    record = ra.bootstrap_record(labels, rng.random(500), users)
    assert record["seed"] == 20250101 and record["resamples"] == 1000
    assert record["users"] == 60 and record["rows"] == 500 and len(record["auc"]) == 1000
    assert all(value == round(value, 6) for value in record["auc"])


def synthetic_runs(seed=0, rows=3000, users=600):
    """Labels, users and scores of three models: ``strong`` and ``twin`` (same quality,
    independent noise) and ``weak``."""
    rng = np.random.default_rng(seed)
    user_ids = rng.integers(0, users, rows)
    labels = rng.integers(0, 2, rows)
    return labels, user_ids, {"strong": labels + rng.normal(0, 1.0, rows),
                              "twin": labels + rng.normal(0, 1.0, rows),
                              "weak": labels + rng.normal(0, 2.5, rows)}


def test_a_clear_gap_is_significant_a_tie_is_not():
    labels, users, scores = synthetic_runs()
    boot = {name: ra.bootstrap_aucs(labels, s, users) for name, s in scores.items()}
    gap = ra.paired_difference(boot["weak"], boot["strong"])
    assert gap["significant"] and gap["high"] < 0
    assert gap["p_value"] == pytest.approx(2 / 1001)   # no resample favours the weak model
    tie = ra.paired_difference(boot["twin"], boot["strong"])
    assert not tie["significant"] and tie["low"] < 0 < tie["high"]
    assert tie["p_value"] > 0.05


def test_paired_difference_on_known_vectors():
    a = np.linspace(0.7, 0.8, 1000)
    result = ra.paired_difference(a + 0.01, a)
    assert result["low"] == pytest.approx(0.01) and result["high"] == pytest.approx(0.01)
    assert result["significant"] and result["p_value"] == pytest.approx(2 / 1001)
    difference = np.arange(1000) / 999 - 0.25               # a quarter below 0
    result = ra.paired_difference(difference, np.zeros(1000))
    assert result["p_value"] == pytest.approx(2 * 251 / 1001)
    assert not result["significant"]


def test_bootstrap_vector_of_a_record():
    record = {"seed": ra.BOOTSTRAP_SEED, "resamples": 1000, "auc": [0.5] * 999 + [None]}
    vector = ra.bootstrap_vector(record)
    assert vector.shape == (1000,) and math.isnan(vector[-1])
    assert ra.bootstrap_vector(None) is None
    assert ra.bootstrap_vector({**record, "seed": 1}) is None


# ---------------------------------------------------------------------- baselines
def test_heuristic_scores_of_the_hand_made_folder(hand_folder):
    scores = ra.heuristic_scores(hand_folder, "valid")
    assert list(scores) == list(ra.HEURISTICS)
    assert scores["popularity"].tolist() == [2, 1, 0, 0]
    assert scores["likes_level"].tolist() == [5, 3, 7, 0]
    # Row 0: target 2 = (0, 1), history mean of (1, 0), (0, 1), (1, 1) = (2, 2) / 3.
    # Row 3: target 4 = (2, 0), history (1, 1) + (0, 1).
    np.testing.assert_allclose(scores["title_cosine"],
                               [1 / math.sqrt(2), 0.0, 0.0, 1 / math.sqrt(5)], atol=1e-12)
    # C[1, 2] = 1 (user 1), C[2, 2] = C[3, 2] = 2 (users 1 and 2); C[2, 1] = 1; item 4: none.
    np.testing.assert_allclose(scores["cooccurrence"],
                               [(math.log(2) + 2 * math.log(3)) / 3, math.log(2), 0.0, 0.0],
                               atol=1e-12)
    test = ra.heuristic_scores(hand_folder, "test")
    # Test row: target 3, history 2, 3: C[2, 3] = 2, C[3, 3] = 2.
    np.testing.assert_allclose(test["cooccurrence"], [math.log(3)], atol=1e-12)
    assert test["popularity"].tolist() == [2] and test["likes_level"].tolist() == [9]


def test_heuristics_never_read_the_truth(hand_folder):
    with open(os.path.join(hand_folder, "truth.parquet"), "wb") as handle:
        handle.write(b"not a parquet file")      # reading it would fail
    assert ra.heuristic_scores(hand_folder, "valid")["popularity"].tolist() == [2, 1, 0, 0]


def test_missing_or_ragged_data_is_a_one_line_error(hand_folder, tmp_path):
    with pytest.raises(UserError, match="test2.parquet: file not found"):
        ra.read_split(hand_folder, "test2")
    ragged = tmp_path / "ragged"
    ragged.mkdir()
    write_table(str(ragged / "valid.parquet"),
                {"user_id": np.array([1, 2]), "item_seq": [[1, 2], [1]],
                 "likes_level": np.array([0, 0]), "item_id": np.array([1, 1])})
    with pytest.raises(UserError, match="row 1: list has length 1"):
        ra.read_split(ragged, "valid")


def test_valid_record_of_a_run(hand_folder):
    data = ra.DatasetRows(hand_folder)
    record = ra.valid_record(np.array([0.9, 0.2, 0.4, 0.3]), data)
    assert record["valid_slices"]["version"] == ra.SLICES_VERSION
    assert record["valid_slices"]["popularity"]["cold"] == {"auc": 1.0, "rows": 2}
    assert record["valid_bootstrap"]["users"] == 3 and record["valid_bootstrap"]["rows"] == 4
    assert len(record["valid_bootstrap"]["auc"]) == 1000
    assert None in record["valid_bootstrap"]["auc"]        # 3 users: some draws lack a class
    with pytest.raises(UserError, match="4 rows but 3 valid scores"):
        ra.valid_record(np.zeros(3), data)


def test_a_failing_analysis_never_costs_the_run(hand_folder, caplog):
    from fuxictr_mmctr.pipeline.run_record import record_text, valid_analysis

    params = {"train_data": os.path.join(hand_folder, "train.parquet"),
              "valid_data": os.path.join(hand_folder, "valid.parquet")}
    fields = valid_analysis(params, np.array([0.9, 0.2, 0.4, 0.3]))
    assert set(fields) == {"valid_slices", "valid_bootstrap"}
    text = record_text({"status": "ok", **fields})
    assert len(text.splitlines()) < 60 and '"auc": [' in text
    assert json.loads(text)["valid_bootstrap"] == fields["valid_bootstrap"]
    assert valid_analysis(params, np.zeros(3)) == {}                  # wrong row count
    assert "4 rows but 3 valid scores" in caplog.text
    elsewhere = {**params, "valid_data": os.path.join(hand_folder, "test.parquet")}
    assert valid_analysis(elsewhere, np.zeros(4)) == {}
