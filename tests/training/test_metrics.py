"""Vectorised metrics against scikit-learn and a naive per-group loop."""
import time

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.training.metrics import auc, evaluate_metrics, gauc, logloss


def _scores_with_ties(rng, n):
    """Scores rounded to 2 decimals so that many rows tie, labels correlated with them."""
    scores = np.round(rng.random(n), 2)
    labels = (rng.random(n) < 0.2 + 0.6 * scores).astype(np.float64)
    return labels, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels, scores = _scores_with_ties(rng, 5000)
    assert abs(auc(labels, scores) - roc_auc_score(labels, scores)) < 1e-9
    coarse = np.round(scores, 0)  # only two distinct scores: ties dominate
    assert abs(auc(labels, coarse) - roc_auc_score(labels, coarse)) < 1e-9


def test_auc_extremes():
    labels = np.array([0, 0, 1, 1])
    assert auc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_auc_single_class_is_a_user_error():
    with pytest.raises(UserError, match="one class"):
        auc(np.ones(10), np.linspace(0, 1, 10))


def test_logloss_equals_sklearn_on_clipped_input():
    rng = np.random.default_rng(3)
    labels = (rng.random(2000) < 0.3).astype(np.float64)
    probs = rng.random(2000)
    probs[:5] = [0.0, 1.0, 1e-12, 1 - 1e-12, 0.5]  # clipping matters for these
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    assert abs(logloss(labels, probs) - log_loss(labels, clipped)) < 1e-9


def _naive_gauc(labels, scores, groups):
    """FuxiCTR's definition, one group at a time with sklearn."""
    weighted, weight = 0.0, 0.0
    for group in np.unique(groups):
        rows = groups == group
        if 0 < labels[rows].sum() < rows.sum():
            weighted += roc_auc_score(labels[rows], scores[rows]) * rows.sum()
            weight += rows.sum()
    return weighted / weight


@pytest.mark.parametrize("seed", [0, 1])
def test_gauc_equals_naive_loop(seed):
    rng = np.random.default_rng(seed)
    labels, scores = _scores_with_ties(rng, 3000)
    groups = rng.integers(0, 200, size=3000) * 7 + 1000  # unsorted, non-contiguous ids
    assert abs(gauc(labels, scores, groups) - _naive_gauc(labels, scores, groups)) < 1e-9


def test_gauc_skips_single_class_groups():
    labels = np.array([1, 0, 1, 1, 0, 0])
    scores = np.array([0.9, 0.1, 0.2, 0.3, 0.8, 0.7])
    groups = np.array([5, 5, 9, 9, 3, 3])  # group 5: AUC 1 (2 rows); 9, 3: one class
    assert gauc(labels, scores, groups) == 1.0
    assert np.isnan(gauc(labels[2:], scores[2:], groups[2:]))


def test_gauc_100k_rows_is_fast():
    rng = np.random.default_rng(4)
    labels, scores = _scores_with_ties(rng, 100_000)
    groups = rng.integers(0, 20_000, size=100_000)
    start = time.perf_counter()
    value = gauc(labels, scores, groups)
    elapsed = time.perf_counter() - start
    assert 0.5 < value < 1.0
    assert elapsed < 2.0, f"gAUC took {elapsed:.2f} s on 100k rows"


def test_evaluate_metrics_names_and_order():
    rng = np.random.default_rng(5)
    labels, scores = _scores_with_ties(rng, 500)
    groups = rng.integers(0, 10, size=500)
    logs = evaluate_metrics(labels, scores, ["gAUC", "AUC", "logloss"], group_id=groups)
    assert list(logs) == ["gAUC", "AUC", "logloss"]
    assert logs["AUC"] == auc(labels, scores)
    assert logs["logloss"] == logloss(labels, scores)
    assert logs["gAUC"] == gauc(labels, scores, groups)


def test_evaluate_metrics_errors_are_one_line():
    labels, scores = np.array([0.0, 1.0]), np.array([0.2, 0.7])
    with pytest.raises(UserError, match="unknown metric 'ACU'") as error:
        evaluate_metrics(labels, scores, ["AUC", "ACU"])
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="group ids"):
        evaluate_metrics(labels, scores, ["gAUC"])
    with pytest.raises(UserError, match="not finite"):
        evaluate_metrics(labels, np.array([0.2, np.nan]), ["AUC"])
