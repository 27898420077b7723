"""Redrawn click-model terms match the written data, and the term regression reads them back."""
import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from fuxictr_mmctr.data.synthetic_rows import TERM_NAMES, ClickModel, sigmoid
from fuxictr_mmctr.data.synthetic_terms import split_terms, term_coefficients
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
