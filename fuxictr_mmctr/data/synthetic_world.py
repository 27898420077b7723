"""The fixed part of a synthetic dataset: items (topics, vectors, tags, effects) and users.

Everything here is drawn once per dataset from the seed; rows are then sampled from it by
:mod:`fuxictr_mmctr.data.synthetic_rows`. The generative process and its constants are
documented in ``docs/synthetic_data.md``.

Array conventions: item arrays have ``num_items + 1`` rows indexed by item id, row 0 being the
padding item (all zeros, never sampled); user arrays have ``num_users + 1`` rows indexed by
user id, row 0 unused.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Spread of an item's latent vector around its topic centre (before normalising).
WITHIN_TOPIC_SPREAD = 0.7
#: Noise added to the latent part of the multimodal vector: it reveals the topic, not everything.
VECTOR_NOISE = 0.2
#: Std of the PCA-like leading dims (the latent signal) shrinks linearly to this fraction.
LEADING_DECAY_TO = 0.5
#: Std of the trailing pure-noise dims decays geometrically from ... to ....
TRAILING_STD = (0.08, 0.01)
#: Share of an item's tags drawn from its own topic's tag block (the rest: any tag).
TAG_TOPIC_SHARE = 0.8
#: Base likes/views level of an item: normal around the middle of 0..10 with this std.
ITEM_LEVEL_STD = 1.5
#: Users have 1..MAX_USER_TOPICS long-term topics.
MAX_USER_TOPICS = 3


@dataclass(frozen=True)
class World:
    """Items and users of one synthetic dataset.

    Shapes (N = num_items, K = num topics, D = latent dim, U = num users):

    * ``item_topic (N+1,) int32``: topic of each item (row 0: -1).
    * ``item_latent (N+1, D) float64``: unit latent vector; similarities in the click model use it.
    * ``item_vectors (N+1, E) float32``: the "multimodal" vector written to ``item_emb_d128``.
    * ``item_tags (N+1, T) int32``: 1..T tag ids per item, left-padded with 0.
    * ``item_effect (N+1,) float64``: per-item click effect, standard normal, id-only.
    * ``item_appeal (N+1,) float64``: content appeal, linear in the latent vector, standardised.
    * ``item_levels (N+1, 2) float64``: base likes/views level of the item.
    * ``cold_items (C,) int32``: items that never occur in train; valid/test targets only.
    * ``topic_items (N_warm,) int32`` and ``topic_cdf (N_warm,) float64``: warm items grouped by
      topic, with the cumulative popularity of topic ``k`` rising from ``k`` to ``k + 1``;
      :meth:`sample_items` inverts it.
    * ``popularity_cdf (N_warm,) float64``: cumulative popularity over all warm items (sorted by
      id), for targets drawn regardless of topic; ``warm_items (N_warm,) int32`` the matching ids.
    * ``user_topics (U+1, MAX_USER_TOPICS) int32`` and ``user_topic_count (U+1,) int32``.
    """

    item_topic: np.ndarray
    item_latent: np.ndarray
    item_vectors: np.ndarray
    item_tags: np.ndarray
    item_effect: np.ndarray
    item_appeal: np.ndarray
    item_levels: np.ndarray
    cold_items: np.ndarray
    topic_items: np.ndarray
    topic_cdf: np.ndarray
    topic_bounds: np.ndarray
    warm_items: np.ndarray
    popularity_cdf: np.ndarray
    user_topics: np.ndarray
    user_topic_count: np.ndarray

    @property
    def num_topics(self) -> int:
        return len(self.topic_bounds) - 1

    def sample_items(self, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw one warm item per entry of ``topics (n,) int``, by popularity within the topic.

        Returns ``(n,) int32`` item ids.
        """
        position = np.searchsorted(self.topic_cdf, topics + rng.random(len(topics)), side="right")
        # k + r can round up to k + 1 when r is within an ulp of 1: stay inside topic k's block.
        position = np.minimum(position, self.topic_bounds[topics + 1] - 1)
        return self.topic_items[position]

    def sample_popular_items(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``count`` warm items by overall popularity; ``(count,) int32``."""
        position = np.searchsorted(self.popularity_cdf, rng.random(count), side="right")
        return self.warm_items[np.minimum(position, len(self.warm_items) - 1)]


def build_world(preset, rng: np.random.Generator) -> World:
    """Draw the items and users of ``preset`` (a :class:`~.synthetic.Preset`)."""
    schema = preset.schema
    num_items = schema.num_items
    item_topic = rng.permutation(np.arange(num_items) % preset.num_topics).astype(np.int32)
    item_latent = _item_latent(item_topic, preset.num_topics, preset.latent_dim, rng)
    item_vectors = _item_vectors(item_latent, schema.item_emb_dim, rng)
    item_tags = _item_tags(item_topic, preset.num_topics, schema, rng)
    item_effect = rng.standard_normal(num_items)
    appeal_direction = _unit(rng.standard_normal(preset.latent_dim))
    item_appeal = item_latent @ appeal_direction
    item_appeal = (item_appeal - item_appeal.mean()) / item_appeal.std()
    item_levels = np.clip(rng.normal((schema.level_vocab - 1) / 2, ITEM_LEVEL_STD, (num_items, 2)),
                          0, schema.level_vocab - 1)

    # Zipf-like popularity over a random ranking; the least popular tail is "cold": never in
    # train, so only content (vector, tags) can tell a model anything about those items.
    rank = rng.permutation(num_items) + 1
    popularity = rank.astype(np.float64) ** -preset.zipf_exponent
    num_cold = int(round(preset.cold_fraction * num_items))
    is_cold = rank > num_items - num_cold
    popularity[is_cold] = 0.0
    item_ids = np.arange(1, num_items + 1, dtype=np.int32)

    topic_items, topic_cdf, topic_bounds = _topic_sampler(item_ids, item_topic, popularity,
                                                          preset.num_topics)
    warm = ~is_cold
    popularity_cdf = np.cumsum(popularity[warm])
    popularity_cdf /= popularity_cdf[-1]

    user_topics = rng.integers(0, preset.num_topics, (preset.num_users + 1, MAX_USER_TOPICS),
                               dtype=np.int32)
    user_topic_count = rng.integers(1, MAX_USER_TOPICS + 1, preset.num_users + 1, dtype=np.int32)

    return World(
        item_topic=_with_padding_row(item_topic, fill=-1),
        item_latent=_with_padding_row(item_latent),
        item_vectors=_with_padding_row(item_vectors),
        item_tags=_with_padding_row(item_tags),
        item_effect=_with_padding_row(item_effect),
        item_appeal=_with_padding_row(item_appeal),
        item_levels=_with_padding_row(item_levels),
        cold_items=item_ids[is_cold],
        topic_items=topic_items,
        topic_cdf=topic_cdf,
        topic_bounds=topic_bounds,
        warm_items=item_ids[warm],
        popularity_cdf=popularity_cdf,
        user_topics=user_topics,
        user_topic_count=user_topic_count,
    )


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows (or the vector) scaled to unit L2 norm."""
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _with_padding_row(values: np.ndarray, fill=0) -> np.ndarray:
    """Prepend the padding item's row (``fill``) to a per-item array of ``num_items`` rows."""
    pad = np.full((1,) + values.shape[1:], fill, dtype=values.dtype)
    return np.concatenate([pad, values])


def _item_latent(item_topic: np.ndarray, num_topics: int, latent_dim: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Unit latent vectors ``(N, D)``: the topic centre plus an item-specific offset."""
    centres = _unit(rng.standard_normal((num_topics, latent_dim)))
    offsets = rng.standard_normal((len(item_topic), latent_dim)) / np.sqrt(latent_dim)
    return _unit(centres[item_topic] + WITHIN_TOPIC_SPREAD * offsets)


def _item_vectors(item_latent: np.ndarray, emb_dim: int, rng: np.random.Generator) -> np.ndarray:
    """PCA-like "multimodal" vectors ``(N, E) float32`` with decreasing variance per dim.

    The first ``D`` dims are the latent vector plus noise, scaled down linearly (the leading
    principal components); the remaining dims are pure noise whose std decays geometrically.
    """
    num_items, latent_dim = item_latent.shape
    noise = rng.standard_normal(item_latent.shape) / np.sqrt(latent_dim)
    leading = item_latent + VECTOR_NOISE * noise
    leading *= np.linspace(1.0, LEADING_DECAY_TO, latent_dim)
    trailing_dims = emb_dim - latent_dim
    trailing_std = np.geomspace(TRAILING_STD[0], TRAILING_STD[1], trailing_dims)
    trailing = rng.standard_normal((num_items, trailing_dims)) * trailing_std
    return np.concatenate([leading, trailing], axis=1).astype(np.float32)


def _item_tags(item_topic: np.ndarray, num_topics: int, schema,
               rng: np.random.Generator) -> np.ndarray:
    """``(N, T) int32`` tags: 1..T per item, mostly from the item's topic block, left-padded."""
    num_items, width = len(item_topic), schema.num_tags_per_item
    real_tags = schema.tag_vocab - 1          # tag ids 1..tag_vocab-1
    block = max(real_tags // num_topics, 1)
    # Squaring a uniform skews draws to the start of the block: each topic has a few common
    # tags and a tail of rare ones, as real tag vocabularies do.
    in_block = (block * rng.random((num_items, width)) ** 2).astype(np.int64)
    own_topic = 1 + (item_topic[:, None] * block + in_block) % real_tags
    any_tag = rng.integers(1, schema.tag_vocab, (num_items, width))
    tags = np.where(rng.random((num_items, width)) < TAG_TOPIC_SHARE, own_topic, any_tag)
    tag_count = rng.integers(1, width + 1, num_items)
    is_padding = np.arange(width)[None, :] < (width - tag_count)[:, None]
    return np.where(is_padding, 0, tags).astype(np.int32)


def _topic_sampler(item_ids: np.ndarray, item_topic: np.ndarray, popularity: np.ndarray,
                   num_topics: int):
    """Warm items sorted by topic, their per-topic cumulative popularity offset by the topic
    index (topic ``k`` spans ``(k, k + 1]``), and the block bounds ``(K + 1,)``."""
    warm = popularity > 0
    order = np.lexsort((item_ids[warm], item_topic[warm]))
    topics = item_topic[warm][order]
    weights = popularity[warm][order]
    bounds = np.searchsorted(topics, np.arange(num_topics + 1)).astype(np.int64)
    if np.any(np.diff(bounds) == 0):
        raise ValueError("every topic needs at least one warm item; lower cold_fraction")
    cumulative = np.cumsum(weights)
    block_start = np.concatenate([[0.0], cumulative[bounds[1:-1] - 1]])
    block_total = cumulative[bounds[1:] - 1] - block_start
    within = (cumulative - block_start[topics]) / block_total[topics]
    within[bounds[1:] - 1] = 1.0               # exact block ends despite rounding
    return item_ids[warm][order], topics + within, bounds
