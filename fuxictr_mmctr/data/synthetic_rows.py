"""Synthetic rows (history, target, likes/views levels) and the logistic click model.

A row is one impression: a user, the user's recent history (``item_seq``), the target item and
its likes/views levels. The click probability is a logistic function of named terms, each
computed from what the row shows (the history terms from the actual items in ``item_seq``), so
a model that reads the row correctly can recover it. ``docs/synthetic_data.md`` states the
process and the coefficients.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fuxictr_mmctr.data.synthetic_world import ITEM_LEVEL_STD, World

#: The last this-many real history items form the short-term (session) part of the history.
SHORT_TERM_ITEMS = 3
#: Chance that a history item follows the row's plan (session topic for the recent items,
#: a long-term topic for the older ones) rather than drifting.
FOLLOW_RATE = 0.85
#: Chance that the session topic is one of the user's long-term topics (else a random topic).
SESSION_FROM_LONG_TERM = 0.5
#: Target drawn from the session topic / a long-term topic / overall popularity.
TARGET_MIX = (0.3, 0.3, 0.4)
#: Per-row jitter of the likes/views levels around the item's base level.
ROW_LEVEL_STD = 2.0

#: Columns of :attr:`Rows.terms`, in order.
TERM_NAMES = ("short_term", "long_term", "appeal", "item_effect", "likes_views_cross",
              "history_quality")

#: The parts switched off one at a time for the partial oracles -> the terms they hold.
PARTS = {
    "history": ("short_term", "long_term"),
    "multimodal": ("appeal",),
    "item_id": ("item_effect",),
    "likes_views_cross": ("likes_views_cross",),
    "history_levels": ("history_quality",),
}


@dataclass(frozen=True)
class ClickModel:
    """``logit = intercept + sum_t coefficient_t * term_t``; ``P(click) = sigmoid(logit)``.

    The intercept is not a field: :func:`calibrate_intercept` sets it so that the expected
    positive rate on train rows is ``positive_rate``.
    """

    short_term: float = 2.0
    long_term: float = 1.5
    appeal: float = 0.5
    item_effect: float = 0.5
    likes_views_cross: float = 0.5
    history_quality: float = 1.0
    positive_rate: float = 0.25

    @property
    def coefficients(self) -> np.ndarray:
        """``(len(TERM_NAMES),)`` coefficients in :data:`TERM_NAMES` order."""
        return np.array([getattr(self, name) for name in TERM_NAMES])

    def logit(self, terms: np.ndarray, intercept: float, without: str | None = None) -> np.ndarray:
        """``terms (R, len(TERM_NAMES))`` -> logits ``(R,)``; ``without`` names a part of
        :data:`PARTS` whose terms are switched off (for the partial oracles)."""
        coefficients = self.coefficients
        if without is not None:
            coefficients = coefficients.copy()
            coefficients[[TERM_NAMES.index(term) for term in PARTS[without]]] = 0.0
        return intercept + terms @ coefficients


def sigmoid(logit: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logit))


def calibrate_intercept(model: ClickModel, terms: np.ndarray) -> float:
    """Intercept making the mean click probability of ``terms (R, T)`` equal the target rate.

    The mean of a sigmoid is increasing in the intercept, so bisection converges.
    """
    base = model.logit(terms, 0.0)
    low, high = -30.0, 30.0
    for _ in range(64):
        middle = (low + high) / 2
        if sigmoid(base + middle).mean() < model.positive_rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2


@dataclass(frozen=True)
class Rows:
    """A block of ``R`` sampled rows.

    ``user_id (R,) int64``, ``item_seq (R, L) int32`` (left-padded, most recent last),
    ``likes_level``/``views_level``/``item_id (R,) int32`` and ``terms (R, len(TERM_NAMES))
    float64``, the click-model terms of each row.
    """

    user_id: np.ndarray
    item_seq: np.ndarray
    likes_level: np.ndarray
    views_level: np.ndarray
    item_id: np.ndarray
    terms: np.ndarray
    session_planted: np.ndarray


def sample_rows(world: World, preset, count: int, rng: np.random.Generator,
                cold_target_rate: float = 0.0) -> Rows:
    """Draw ``count`` rows of ``preset``; a share ``cold_target_rate`` of targets are cold items."""
    seq_len = preset.schema.max_seq_len
    user_id = rng.integers(1, preset.num_users + 1, count)
    session_topic = np.where(rng.random(count) < SESSION_FROM_LONG_TERM,
                             _long_term_topic(world, user_id, rng),
                             rng.integers(0, world.num_topics, count))

    history_len = _history_lengths(preset, count, rng)
    history_row = np.repeat(np.arange(count), history_len)
    row_end = np.cumsum(history_len)
    # Recency 0 is the most recent item (the last column of item_seq).
    recency = row_end[history_row] - 1 - np.arange(len(history_row))
    is_recent = recency < SHORT_TERM_ITEMS
    follows = rng.random(len(history_row)) < FOLLOW_RATE
    long_term = _long_term_topic(world, user_id[history_row], rng)
    drift = rng.integers(0, world.num_topics, len(history_row))
    history_topic = np.where(is_recent, np.where(follows, session_topic[history_row], long_term),
                             np.where(follows, long_term, drift))
    history_items = world.sample_items(history_topic, rng)

    item_seq = np.zeros((count, seq_len), dtype=np.int32)
    item_seq[history_row, seq_len - 1 - recency] = history_items
    session_planted = np.zeros((count, seq_len), dtype=bool)
    session_planted[history_row, seq_len - 1 - recency] = is_recent & follows

    target = _targets(world, user_id, session_topic, rng, cold_target_rate)
    likes_level, views_level = _levels(world, target, preset.schema.level_vocab, rng)

    latent = world.item_latent[history_items]
    short_sum = _segment_sum(latent * is_recent[:, None], row_end)
    long_sum = _segment_sum(latent, row_end)
    target_latent = world.item_latent[target]
    middle = (preset.schema.level_vocab - 1) / 2
    terms = np.stack([
        _cosine(target_latent, short_sum),
        _cosine(target_latent, long_sum),
        world.item_appeal[target],
        world.item_effect[target],
        (likes_level - middle) / (middle / 2) * (views_level - middle) / (middle / 2),
        _history_quality(world, history_items, row_end, middle),
    ], axis=1)
    return Rows(user_id=user_id.astype(np.int64), item_seq=item_seq, likes_level=likes_level,
                views_level=views_level, item_id=target, terms=terms,
                session_planted=session_planted)


def _long_term_topic(world: World, user_id: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of each user's long-term topics, uniformly; ``(n,) int32``."""
    pick = (rng.random(len(user_id)) * world.user_topic_count[user_id]).astype(np.int64)
    return world.user_topics[user_id, pick]


def _history_lengths(preset, count: int, rng: np.random.Generator) -> np.ndarray:
    """Real history items per row: log-normal around the median, clipped to ``[1, L]``, and
    0 (empty history) for a share ``empty_history_rate`` of rows."""
    spread = np.exp(preset.history_sigma * rng.standard_normal(count))
    lengths = np.rint(preset.history_median * spread)
    lengths = np.clip(lengths, 1, preset.schema.max_seq_len).astype(np.int64)
    lengths[rng.random(count) < preset.empty_history_rate] = 0
    return lengths


def _targets(world: World, user_id: np.ndarray, session_topic: np.ndarray,
             rng: np.random.Generator, cold_target_rate: float) -> np.ndarray:
    """Target items ``(R,) int32`` from the :data:`TARGET_MIX` of sources, some cold."""
    count = len(user_id)
    source = np.searchsorted(np.cumsum(TARGET_MIX), rng.random(count) * sum(TARGET_MIX),
                             side="right")
    topic = np.where(source == 0, session_topic, _long_term_topic(world, user_id, rng))
    target = np.where(source == 2, world.sample_popular_items(count, rng),
                      world.sample_items(topic, rng))
    cold = rng.random(count) < cold_target_rate
    if len(world.cold_items):
        cold_pick = world.cold_items[rng.integers(0, len(world.cold_items), count)]
        target = np.where(cold, cold_pick, target)
    return target.astype(np.int32)


def _levels(world: World, target: np.ndarray, level_vocab: int, rng: np.random.Generator):
    """likes_level, views_level ``(R,) int32``: the item's base level plus row jitter."""
    noisy = world.item_levels[target] + ROW_LEVEL_STD * rng.standard_normal((len(target), 2))
    levels = np.clip(np.rint(noisy), 0, level_vocab - 1).astype(np.int32)
    return levels[:, 0], levels[:, 1]


def item_likes_level(world: World) -> np.ndarray:
    """Per-item likes level as the raw item file shows it: the base level rounded;
    ``(N+1,) int64`` indexed by item id (row 0, the padding item, is 0)."""
    return np.rint(world.item_levels[:, 0]).astype(np.int64)


def _history_quality(world: World, history_items: np.ndarray, row_end: np.ndarray,
                     middle: float) -> np.ndarray:
    """Mean standardised likes level of each row's real history items, ``(R,) float64``.

    ``history_items (n,)`` are the rows' history items concatenated (row r's end at
    ``row_end[r]``); an item's level is its rounded base likes level (``item_likes_level``),
    standardised as ``(level - middle) / ITEM_LEVEL_STD``. Rows with no history get 0.
    """
    standardised = (item_likes_level(world)[history_items] - middle) / ITEM_LEVEL_STD
    total = _segment_sum(standardised[:, None], row_end)[:, 0]
    length = np.diff(np.concatenate([[0], row_end]))
    return np.divide(total, length, out=np.zeros_like(total), where=length > 0)


def _segment_sum(values: np.ndarray, row_end: np.ndarray) -> np.ndarray:
    """Sums of consecutive segments of ``values (n, D)`` ending at ``row_end (R,)``: ``(R, D)``.

    Empty segments give zeros. A running sum avoids ``np.add.reduceat``'s handling of empty
    segments.
    """
    running = np.zeros((len(values) + 1, values.shape[1]))
    np.cumsum(values, axis=0, out=running[1:])
    row_start = np.concatenate([[0], row_end[:-1]])
    return running[row_end] - running[row_start]


def _cosine(unit: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Cosine of unit rows ``(R, D)`` with rows of ``other (R, D)``; 0 where ``other`` is 0."""
    norm = np.linalg.norm(other, axis=1)
    dot = np.einsum("rd,rd->r", unit, other)
    return np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 1e-12)
