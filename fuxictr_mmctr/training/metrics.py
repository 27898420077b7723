"""Vectorised ranking metrics: AUC, gAUC and logloss on numpy arrays.

FuxiCTR's ``evaluate_metrics`` builds gAUC with one process-pool task per group (~18 s for
100k rows). Here every metric is a few whole-array numpy passes:

* AUC is the Mann-Whitney statistic on tie-averaged ranks, which is exactly the area under
  the ROC curve with ties counted as one half (what ``sklearn.metrics.roc_auc_score`` computes).
* gAUC sorts once by ``(group, score)`` and reduces ranks per group with segment sums; the
  result is FuxiCTR's definition (DIN paper): ``sum_g n_g * AUC_g / sum_g n_g`` over the groups
  that have both a positive and a negative row, ``n_g`` being the group's row count.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from fuxictr_mmctr.errors import UserError

#: Metric names understood by :func:`evaluate_metrics` (``binary_crossentropy`` = logloss).
METRICS = ("AUC", "gAUC", "logloss")
_LOGLOSS_NAMES = ("logloss", "binary_crossentropy")


def auc(y_true, y_pred) -> float:
    """Area under the ROC curve. ``y_true (N,)`` in {0, 1}, ``y_pred (N,)`` scores.

    Raises :class:`UserError` when only one class is present (AUC is undefined).
    """
    y_true, y_pred = _as_arrays(y_true, y_pred)
    num_pos = float(y_true.sum())
    num_neg = float(len(y_true) - num_pos)
    if num_pos == 0 or num_neg == 0:
        raise UserError(f"AUC is undefined: the labels have only one class ({len(y_true)} rows)")
    order = np.argsort(y_pred, kind="stable")
    ranks = _tie_averaged_ranks(y_pred[order], np.zeros(len(order), dtype=bool))
    pos_rank_sum = float(ranks[y_true[order] > 0].sum())
    return (pos_rank_sum - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg)


def logloss(y_true, y_pred, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy with ``y_pred`` clipped to ``[eps, 1 - eps]``. Shapes ``(N,)``."""
    y_true, y_pred = _as_arrays(y_true, y_pred)
    prob = np.clip(y_pred, eps, 1 - eps)
    return float(-np.mean(y_true * np.log(prob) + (1 - y_true) * np.log1p(-prob)))


def gauc(y_true, y_pred, group_id) -> float:
    """Group AUC: row-count-weighted mean AUC of the groups holding both classes.

    ``y_true, y_pred, group_id``: ``(N,)``; ``group_id`` any sortable dtype (e.g. user ids).
    Returns ``nan`` when no group has both classes.
    """
    y_true, y_pred = _as_arrays(y_true, y_pred)
    group_id = np.asarray(group_id).reshape(-1)
    if len(group_id) != len(y_true):
        raise UserError(f"gAUC: {len(group_id)} group ids for {len(y_true)} predictions")
    if len(y_true) == 0:
        return float("nan")
    order = np.lexsort((y_pred, group_id))  # last key is primary: by group, then by score
    groups, scores, labels = group_id[order], y_pred[order], y_true[order]
    group_start = np.empty(len(groups), dtype=bool)
    group_start[0] = True
    group_start[1:] = groups[1:] != groups[:-1]
    starts = np.flatnonzero(group_start)
    # Global tie-averaged ranks; ties never span two groups because a group start breaks them,
    # so subtracting the group's start offset turns them into ranks within the group.
    ranks = _tie_averaged_ranks(scores, group_start)
    segment = np.cumsum(group_start) - 1
    ranks -= starts[segment]
    sizes = np.diff(np.append(starts, len(groups))).astype(np.float64)
    num_pos = np.add.reduceat(labels, starts)
    num_neg = sizes - num_pos
    pos_rank_sum = np.add.reduceat(ranks * labels, starts)
    both = (num_pos > 0) & (num_neg > 0)
    if not both.any():
        return float("nan")
    group_auc = (pos_rank_sum[both] - num_pos[both] * (num_pos[both] + 1) / 2) \
        / (num_pos[both] * num_neg[both])
    return float(np.sum(group_auc * sizes[both]) / np.sum(sizes[both]))


def evaluate_metrics(y_true, y_pred, metrics, group_id=None) -> dict:
    """``{name: value}`` in the order of ``metrics`` (names from :data:`METRICS`).

    ``group_id (N,)`` is needed for ``gAUC``. Unknown names and non-finite predictions raise
    :class:`UserError`.
    """
    unknown = [name for name in metrics if name not in METRICS + _LOGLOSS_NAMES]
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r}; supported: {', '.join(METRICS)}")
    y_true, y_pred = _as_arrays(y_true, y_pred)
    bad = ~np.isfinite(y_pred)
    if bad.any():
        raise UserError(f"{int(bad.sum())} of {len(y_pred)} predictions are not finite "
                        f"(first at row {int(np.argmax(bad))}); the model has diverged")
    results = OrderedDict()
    for name in metrics:
        if name in _LOGLOSS_NAMES:
            results[name] = logloss(y_true, y_pred)
        elif name == "AUC":
            results[name] = auc(y_true, y_pred)
        else:
            if group_id is None:
                raise UserError("metric gAUC needs group ids (the feature map's group_id column)")
            results[name] = gauc(y_true, y_pred, group_id)
    return results


def _as_arrays(y_true, y_pred):
    """Both as flat float64 arrays of equal length."""
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if len(y_true) != len(y_pred):
        raise UserError(f"{len(y_true)} labels for {len(y_pred)} predictions")
    return y_true, y_pred


def _tie_averaged_ranks(sorted_scores: np.ndarray, breaks: np.ndarray) -> np.ndarray:
    """1-based ranks of ``sorted_scores (N,)`` with each run of equal scores given its mean rank.

    ``breaks (N,)`` bool forces a new run (used for group starts). Returns ``(N,) float64``.
    """
    n = len(sorted_scores)
    run_start = np.empty(n, dtype=bool)
    if n == 0:
        return np.zeros(0)
    run_start[0] = True
    run_start[1:] = sorted_scores[1:] != sorted_scores[:-1]
    run_start |= breaks
    starts = np.flatnonzero(run_start)
    ends = np.append(starts[1:], n)  # exclusive
    mean_rank = (starts + 1 + ends) / 2.0  # mean of 1-based ranks starts+1 .. ends
    return mean_rank[np.cumsum(run_start) - 1]
