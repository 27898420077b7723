"""Redrawn click-model terms and planted session positions match the written data, and the
term regression reads the terms back."""
import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fuxictr_mmctr.data.synthetic import (PRESETS, RAW_ITEM_FILE, WORLD_STREAM, random_stream,
                                          split_blocks)
from fuxictr_mmctr.data.synthetic_rows import (PARTS, SHORT_TERM_ITEMS, TERM_NAMES, ClickModel,
                                               sigmoid)
from fuxictr_mmctr.data.synthetic_terms import (split_session_planted, split_terms,
                                                term_coefficients)
from fuxictr_mmctr.data.synthetic_world import ITEM_LEVEL_STD, build_world
from fuxictr_mmctr.errors import UserError


def truth_probs(folder, split):
    truth = pq.read_table(os.path.join(folder, "truth.parquet")).to_pandas()
    return truth[truth["split"] == split].sort_values("row")["click_prob"].to_numpy()


def intercept(folder):
    with open(os.path.join(folder, "oracle.json"), encoding="utf-8") as handle:
        return json.load(handle)["intercept"]


@pytest.mark.parametrize("split", ["valid", "test"])
def test_redrawn_terms_give_the_written_click_probabilities(tiny_dataset, split):
    terms = split_terms(tiny_dataset, split)
    assert terms.shape == (len(truth_probs(tiny_dataset, split)), len(TERM_NAMES))
    probs = sigmoid(ClickModel().logit(terms, intercept(tiny_dataset)))
    np.testing.assert_allclose(probs, truth_probs(tiny_dataset, split), rtol=1e-6, atol=1e-9)


def test_regression_on_oracle_scores_recovers_the_true_coefficients(tiny_dataset):
    fit = term_coefficients(split_terms(tiny_dataset, "valid"), truth_probs(tiny_dataset, "valid"))
    for name, true_value in zip(TERM_NAMES, ClickModel().coefficients):
        assert fit[name] == pytest.approx(true_value, abs=1e-3)
    assert fit["r2"] > 0.9999


def test_scores_blind_to_a_term_get_a_zero_coefficient(tiny_dataset):
    terms = split_terms(tiny_dataset, "valid")
    without_cross = terms.copy()
    without_cross[:, TERM_NAMES.index("likes_views_cross")] = 0.0
    scores = sigmoid(ClickModel().logit(without_cross, intercept(tiny_dataset)))
    fit = term_coefficients(terms, scores)
    assert abs(fit["likes_views_cross"]) < 1e-3
    assert fit["short_term"] == pytest.approx(2.0, abs=1e-3)


def test_data_of_another_seed_is_refused(tiny_dataset, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_dataset, folder)
    report = json.loads((folder / "oracle.json").read_text())
    report["seed"] += 1
    (folder / "oracle.json").write_text(json.dumps(report))
    with pytest.raises(UserError, match="valid.parquet: rows differ"):
        split_terms(str(folder), "valid")


# --- history levels term and the planted session positions ---------------------------------

def split_matrix(folder, split, column):
    values = pq.read_table(os.path.join(folder, f"{split}.parquet"),
                           columns=[column]).column(column).combine_chunks()
    return values.flatten().to_numpy().reshape(len(values), -1)


def test_history_quality_is_the_mean_raw_likes_level_of_the_history(tiny_dataset):
    likes = pq.read_table(os.path.join(tiny_dataset, RAW_ITEM_FILE)).column("likes_level")
    likes_by_id = np.concatenate([[0], likes.to_numpy()]).astype(np.float64)
    item_seq = split_matrix(tiny_dataset, "valid", "item_seq")
    real = item_seq > 0
    standardised = np.where(real, (likes_by_id[item_seq] - 5) / ITEM_LEVEL_STD, 0.0)
    count = real.sum(axis=1)
    expected = np.divide(standardised.sum(axis=1), count, out=np.zeros(len(count)),
                         where=count > 0)
    term = split_terms(tiny_dataset, "valid")[:, TERM_NAMES.index("history_quality")]
    np.testing.assert_allclose(term, expected, atol=1e-12)
    assert np.all(term[count == 0] == 0) and (count == 0).any()
    assert term.std() > 0.2


def test_history_levels_part_is_in_the_oracle_report_and_matters(tiny_dataset):
    with open(os.path.join(tiny_dataset, "oracle.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    assert PARTS["history_levels"] == ("history_quality",)
    for split in ("valid", "test"):
        partial = report["partial_oracle_auc"]["no_history_levels"][split]
        assert partial < report["oracle_auc"][split] - 0.003, split


@pytest.mark.parametrize("split", ["valid", "test"])
def test_session_planted_marks_recent_real_positions_only(tiny_dataset, split):
    planted = split_session_planted(tiny_dataset, split)
    item_seq = split_matrix(tiny_dataset, split, "item_seq")
    assert planted.shape == item_seq.shape and planted.dtype == bool
    real = item_seq > 0
    recent_rank = np.cumsum(real[:, ::-1], axis=1)[:, ::-1]     # 1 = most recent real item
    recent = real & (recent_rank <= SHORT_TERM_ITEMS)
    assert not np.any(planted & ~recent)
    # Most recent items follow the session topic (FOLLOW_RATE), not all of them.
    assert 0.7 < planted.sum() / recent.sum() < 0.95


def test_session_planted_matches_the_generator(tiny_dataset):
    planted = split_session_planted(tiny_dataset, "valid")
    with open(os.path.join(tiny_dataset, "oracle.json"), encoding="utf-8") as handle:
        seed = json.load(handle)["seed"]
    preset = PRESETS["tiny"]
    world = build_world(preset, random_stream(seed, WORLD_STREAM))
    blocks = [rows for _, rows, _ in split_blocks(world, preset, "valid", seed)]
    assert np.array_equal(planted, np.concatenate([rows.session_planted for rows in blocks]))


def test_session_planted_refuses_another_item_seq(tiny_dataset, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_dataset, folder)
    path = folder / "valid.parquet"
    table = pq.read_table(path)
    item_seq = split_matrix(str(folder), "valid", "item_seq").copy()
    item_seq[0, -1] = item_seq[0, -1] % PRESETS["tiny"].schema.num_items + 1   # another item
    column = pa.array(list(item_seq), pa.list_(pa.int64()))
    pq.write_table(table.set_column(table.column_names.index("item_seq"), "item_seq", column),
                   path)
    with pytest.raises(UserError, match="valid.parquet: column item_seq differs"):
        split_session_planted(str(folder), "valid")
