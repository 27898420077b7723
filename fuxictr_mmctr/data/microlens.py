"""The public MicroLens release as a challenge-schema dataset (``fuxictr-mmctr microlens``).

Framing (the challenge's, per user with videos ``s_1..s_n`` in time order):

* test target ``s_n`` with history ``s_1..s_{n-1}``; valid target ``s_{n-1}`` with history
  ``s_1..s_{n-2}``; train targets ``s_2..s_{n-2}``, each with the videos before it. The *train
  period* is ``s_1..s_{n-2}``: everything counted from the data (levels, hashtag vocabulary
  sizes aside) comes from it, never from a valid or test target.
* Histories keep the last ``seq_len`` items, left-padded with 0, most recent last.
* Each real interaction is a positive row followed by ``neg_per_pos`` negative rows with the
  same user and history and a target drawn from the videos the user never interacted with
  (distinct within the group): uniformly by default, or in proportion to the train-period count
  plus one (``negatives="popularity"``, kept to measure why uniform is the default, see
  ``docs/real_data.md``).
* Item ids are ``1..N`` in ascending order of the release's video id (over the videos of the
  interaction file); ``item_map.parquet`` maps them back. ``user_id`` is the release's id.
* Row features describe the target item, from the train period: ``views_level`` is the level
  (:func:`~.microlens_content.count_level`) of its train-period interaction count,
  ``likes_level`` the level of its count over each user's last ``recent`` train-period videos
  (recent popularity; the release has no likes or views). The same per-item levels are the raw
  item file's ``likes_level``/``views_level``.

Output folder (the MicroLens_1M_x1 contract, plus)::

    train.parquet valid.parquet test.parquet item_info.parquet schema.json   the contract
    truth.parquet        split, row, label of every valid and test row (test.parquet has no label)
    item_map.parquet     item_id 1..N, video_id, title
    item_feature.parquet raw item file (item_id, item_title, item_tags, likes_level, views_level)
    item_info_levels.parquet   item_info + item_likes_level/item_views_level (`items` command)
    stats.json           sizes, positive rates, input hashes, parameters, training-free AUCs

Everything is written into a temporary folder beside ``out`` and renamed into place when
complete. Users are processed in blocks, each block with its own random streams
``(seed, split, block)``, so memory stays linear in the input and two runs give the same bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fuxictr_mmctr.data.item_features import build_item_table
from fuxictr_mmctr.data.microlens_content import count_level, hashtag_table, title_vectors
from fuxictr_mmctr.data.microlens_release import (
    Interactions,
    check_titles_cover,
    read_interactions,
    read_titles,
)
from fuxictr_mmctr.data.schema import (
    ITEM_ID,
    ITEM_INFO,
    ITEM_SEQ,
    ITEM_TAGS,
    LABEL,
    LIKES_LEVEL,
    SPLITS,
    USER_ID,
    VIEWS_LEVEL,
    Schema,
    list_column,
    pyarrow_schema,
    save_schema,
    split_file,
)
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.fileio import TEMPORARY_PREFIX, write_error

MADE_BY = "fuxictr-mmctr microlens"
FORMAT_VERSION = 1
STATS_FILE = "stats.json"
TRUTH_FILE = "truth.parquet"
ITEM_MAP_FILE = "item_map.parquet"
RAW_ITEM_FILE = "item_feature.parquet"
LEVELS_FILE = "item_info_levels.parquet"
NEGATIVE_MODES = ("uniform", "popularity")
#: Entries a training run derives inside a dataset folder: never a reason to refuse it.
DERIVED_ENTRIES = (".cache", "feature_map.json")


@dataclass(frozen=True)
class FramingOptions:
    """How the release becomes rows (see the module docstring)."""

    seq_len: int = 50
    neg_per_pos: int = 3
    seed: int = 2025
    dim: int = 128
    negatives: str = "uniform"
    recent: int = 3
    max_tags: int = 5
    block_users: int = 4096

    def check(self) -> None:
        for name in ("seq_len", "neg_per_pos", "dim", "recent", "max_tags", "block_users"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise UserError(f"microlens: --{name.replace('_', '-')} must be a positive "
                                f"integer, got {value!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise UserError(f"microlens: --seed must be a non-negative integer, got {self.seed!r}")
        if self.negatives not in NEGATIVE_MODES:
            raise UserError(f"microlens: --negatives must be one of {', '.join(NEGATIVE_MODES)}, "
                            f"got {self.negatives!r}")


@dataclass(frozen=True)
class Catalogue:
    """The dataset's items and what the train period says about them.

    ``video_ids (N,)``: release id of item ``i`` at ``i - 1``; ``items (M,)``: item id of each
    interaction (aligned with :attr:`Interactions.videos`); ``train_count``/``recent_count``
    ``(N + 1,)``: train-period and recent train-period interaction counts per item id.
    """

    video_ids: np.ndarray
    items: np.ndarray
    train_count: np.ndarray
    recent_count: np.ndarray

    @property
    def num_items(self) -> int:
        return len(self.video_ids)


def build_microlens(pairs: str, titles: str, out: str, options: FramingOptions = FramingOptions(),
                    say=print, analyse=None) -> dict:
    """Write the dataset of the release files ``pairs`` and ``titles`` into ``out``.

    ``analyse(folder) -> dict`` (optional) is called on the finished temporary folder and its
    result stored in ``stats.json`` under ``training_free_auc``. Returns the stats.
    """
    started = time.perf_counter()
    options.check()
    check_out_dir(out)
    interactions = read_interactions(pairs)
    title_of = read_titles(titles)
    check_titles_cover(interactions, title_of, pairs, titles)
    say(f"microlens: {interactions.num_users:,} users, {len(interactions.videos):,} "
        f"interactions from {pairs}")
    catalogue = make_catalogue(interactions, options.recent)

    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=TEMPORARY_PREFIX, suffix=os.path.basename(out), dir=parent)
    try:
        titles_in_order = [title_of[int(video)] for video in catalogue.video_ids]
        item_tags, vocabulary = hashtag_table(titles_in_order, max_tags=options.max_tags)
        schema = Schema(max_seq_len=options.seq_len, num_items=catalogue.num_items,
                        num_tags_per_item=options.max_tags, item_emb_dim=options.dim,
                        tag_vocab=len(vocabulary) + 1, level_vocab=11,
                        user_vocab=int(interactions.user_ids.max()) + 1)
        save_schema(schema, work)
        content = _write_items(work, catalogue, title_of, item_tags, schema, options)
        content["tags"] = len(vocabulary)
        rows = _write_splits(work, interactions, catalogue, schema, options)
        build_item_table(os.path.join(work, RAW_ITEM_FILE),
                         os.path.join(work, split_file(ITEM_INFO)),
                         os.path.join(work, LEVELS_FILE), say=lambda *args: None)
        stats = _stats(pairs, titles, interactions, catalogue, options, content, rows)
        if analyse is not None:
            stats["training_free_auc"] = analyse(work)
        with open(os.path.join(work, STATS_FILE), "w", encoding="utf-8") as handle:
            handle.write(json.dumps(stats, indent=2) + "\n")
        _replace_folder(work, out)
    except OSError as error:
        shutil.rmtree(work, ignore_errors=True)
        raise write_error(out, error) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    say(f"microlens: wrote {out}: train {rows['train']:,}, valid {rows['valid']:,}, test "
        f"{rows['test']:,} rows, {catalogue.num_items:,} items, "
        f"{time.perf_counter() - started:.1f} s")
    return stats


# ---------------------------------------------------------------------- the output folder
def check_out_dir(out: str) -> None:
    """``out`` is a new or empty folder, or one this command wrote before (made again)."""
    if not out or not out.strip():
        raise UserError("microlens: --out is an empty path; give the output folder")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"{out}: is a file; --out takes a folder")
    if not os.path.isdir(out):
        return
    entries = sorted(name for name in os.listdir(out)
                     if name not in DERIVED_ENTRIES and not name.startswith(TEMPORARY_PREFIX))
    if not entries or _made_here(out):
        return
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    raise UserError(f"{out}: folder holds {shown}, not a dataset made by `{MADE_BY}`; choose an "
                    f"empty or new folder (nothing was written)")


def _made_here(out: str) -> bool:
    try:
        with open(os.path.join(out, STATS_FILE), encoding="utf-8") as handle:
            return json.load(handle).get("made_by") == MADE_BY
    except (OSError, ValueError, AttributeError):
        return False


def _replace_folder(work: str, out: str) -> None:
    """Move the finished ``work`` folder onto ``out`` (an old copy is removed only after)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)  # mkdtemp makes the folder private
    if not os.path.exists(out):
        os.replace(work, out)
        return
    old = tempfile.mkdtemp(prefix=TEMPORARY_PREFIX, dir=os.path.dirname(os.path.abspath(out)))
    os.rmdir(old)
    os.replace(out, old)
    os.replace(work, out)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------- items
def make_catalogue(interactions: Interactions, recent: int) -> Catalogue:
    """Item ids ``1..N`` by ascending video id, and the train-period counts per item."""
    video_ids = np.unique(interactions.videos)
    items = np.searchsorted(video_ids, interactions.videos).astype(np.int64) + 1
    position, length = position_in_user(interactions)
    train_period = position < length - 2
    recent_period = train_period & (position >= length - 2 - recent)
    size = len(video_ids) + 1
    return Catalogue(video_ids=video_ids, items=items,
                     train_count=np.bincount(items[train_period], minlength=size),
                     recent_count=np.bincount(items[recent_period], minlength=size))


def position_in_user(interactions: Interactions):
    """``(position (M,), length (M,))``: each interaction's 0-based place in its user's
    sequence and that sequence's length."""
    lengths = interactions.lengths
    starts = np.repeat(interactions.offsets[:-1], lengths)
    return np.arange(len(interactions.videos)) - starts, np.repeat(lengths, lengths)


def _write_items(work: str, catalogue: Catalogue, title_of: dict, item_tags: np.ndarray,
                 schema: Schema, options: FramingOptions) -> dict:
    """item_info, item_map and the raw item file; returns content facts."""
    titles = [title_of[int(video)] for video in catalogue.video_ids]
    all_ids = sorted(title_of)
    all_vectors, explained = title_vectors([title_of[video] for video in all_ids], options.dim,
                                           options.seed)
    vectors = np.zeros((catalogue.num_items + 1, options.dim), dtype=np.float32)
    vectors[1:] = all_vectors[np.searchsorted(np.asarray(all_ids), catalogue.video_ids)]
    item_ids = np.arange(catalogue.num_items + 1, dtype=np.int64)
    info = pa.table([pa.array(item_ids), list_column(item_tags, pa.int64()), list_column(vectors)],
                    schema=pyarrow_schema(schema, ITEM_INFO))
    pq.write_table(info, os.path.join(work, split_file(ITEM_INFO)))
    pq.write_table(pa.table({ITEM_ID: pa.array(item_ids[1:]),
                             "video_id": pa.array(catalogue.video_ids.astype(np.int64)),
                             "title": pa.array(titles, pa.string())}),
                   os.path.join(work, ITEM_MAP_FILE))
    likes, views = count_level(catalogue.recent_count), count_level(catalogue.train_count)
    tag_text = [" ".join(str(tag) for tag in row[row > 0]) for row in item_tags[1:]]
    pq.write_table(pa.table({ITEM_ID: pa.array(item_ids[1:]),
                             "item_title": pa.array(titles, pa.string()),
                             ITEM_TAGS: pa.array(tag_text, pa.string()),
                             LIKES_LEVEL: pa.array(likes[1:]),
                             VIEWS_LEVEL: pa.array(views[1:])}),
                   os.path.join(work, RAW_ITEM_FILE))
    return {"explained_variance": explained,
            "titles_fitted": len(all_ids),
            "items_with_tags": int((item_tags[1:] > 0).any(axis=1).sum())}


# ---------------------------------------------------------------------- rows
def target_positions(offsets: np.ndarray, split: str) -> np.ndarray:
    """Flat positions of the targets of ``split`` for users with sequence ``offsets (U + 1,)``:
    test ``s_n``, valid ``s_{n-1}``, train ``s_2..s_{n-2}`` (per user, in time order)."""
    starts, ends = offsets[:-1], offsets[1:]
    if split == "test":
        return ends - 1
    if split == "valid":
        return ends - 2
    counts = np.maximum(ends - starts - 3, 0)
    first = np.repeat(starts + 1, counts)
    return first + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)


def histories(items: np.ndarray, user_start: np.ndarray, positions: np.ndarray,
              seq_len: int) -> np.ndarray:
    """Left-padded histories ``(P, seq_len) int64``: the (at most) ``seq_len`` items before each
    position of ``positions (P,)`` within its user (whose first position is ``user_start``)."""
    index = positions[:, None] - seq_len + np.arange(seq_len)[None, :]
    real = index >= user_start[:, None]
    return np.where(real, items[np.maximum(index, 0)], 0)


class NegativeSampler:
    """Targets the user never interacted with, distinct within a positive's group."""

    def __init__(self, interactions: Interactions, catalogue: Catalogue, options: FramingOptions):
        self.num_items = catalogue.num_items
        owner = np.repeat(np.arange(interactions.num_users), interactions.lengths)
        self.seen_keys = np.sort(owner * (self.num_items + 1) + catalogue.items)
        self.per_group = options.neg_per_pos
        self.cdf = None
        if options.negatives == "popularity":
            weights = catalogue.train_count[1:].astype(np.float64) + 1.0
            self.cdf = np.cumsum(weights) / weights.sum()

    def draw(self, user_index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``user_index (P,)`` -> negative item ids ``(P, neg_per_pos) int64``."""
        negatives = self._items((len(user_index), self.per_group), rng)
        bad = self._rejected(user_index, negatives)
        while bad.any():
            negatives[bad] = self._items(int(bad.sum()), rng)
            bad = self._rejected(user_index, negatives)
        return negatives

    def _items(self, shape, rng: np.random.Generator) -> np.ndarray:
        if self.cdf is None:
            return rng.integers(1, self.num_items + 1, size=shape, dtype=np.int64)
        drawn = np.searchsorted(self.cdf, rng.random(shape), side="right") + 1
        return np.minimum(drawn, self.num_items).astype(np.int64)

    def _rejected(self, user_index: np.ndarray, negatives: np.ndarray) -> np.ndarray:
        """``(P, K) bool``: the user has the item, or an earlier column of the group drew it."""
        keys = user_index[:, None] * (self.num_items + 1) + negatives
        place = np.minimum(np.searchsorted(self.seen_keys, keys), len(self.seen_keys) - 1)
        bad = self.seen_keys[place] == keys
        for column in range(1, negatives.shape[1]):
            bad[:, column] |= (negatives[:, :column] == negatives[:, [column]]).any(axis=1)
        return bad


def _write_splits(work: str, interactions: Interactions, catalogue: Catalogue, schema: Schema,
                  options: FramingOptions) -> dict:
    """The three splits block by block, then truth.parquet; returns rows per split."""
    sampler = NegativeSampler(interactions, catalogue, options)
    likes, views = count_level(catalogue.recent_count), count_level(catalogue.train_count)
    group = options.neg_per_pos + 1
    rows, truth = {}, {}
    for split_index, split in enumerate(SPLITS):
        arrow_schema = pyarrow_schema(schema, split)
        labels = []
        with pq.ParquetWriter(os.path.join(work, split_file(split)), arrow_schema) as writer:
            for block, first in enumerate(range(0, interactions.num_users, options.block_users)):
                users = np.arange(first, min(first + options.block_users, interactions.num_users))
                rng = np.random.default_rng([options.seed, split_index, block])
                table, label = _block_rows(interactions, catalogue, sampler, users, split, rng,
                                           options, likes, views, group, arrow_schema)
                writer.write_table(table)
                labels.append(label)
        labels = np.concatenate(labels)
        rows[split] = len(labels)
        if split != "train":
            truth[split] = labels
    _write_truth(truth, os.path.join(work, TRUTH_FILE))
    rows["positive_rate"] = {split: round(1.0 / group, 6) for split in SPLITS}
    return rows


def _block_rows(interactions, catalogue, sampler, users, split, rng, options, likes, views,
                group, arrow_schema):
    """The rows of ``split`` for the users ``users (b,)`` (indices): an arrow table and its
    labels ``(R,) int64``."""
    offsets = interactions.offsets[users[0]:users[-1] + 2]
    positions = target_positions(offsets, split)
    counts = np.diff(offsets)
    per_user = {"test": np.ones_like(counts), "valid": np.ones_like(counts),
                "train": np.maximum(counts - 3, 0)}[split]
    user_index = np.repeat(users, per_user)
    history = histories(catalogue.items, interactions.offsets[user_index], positions,
                        options.seq_len)
    targets = np.concatenate([catalogue.items[positions][:, None], sampler.draw(user_index, rng)],
                             axis=1).reshape(-1)
    label = np.tile(np.r_[1, np.zeros(group - 1, dtype=np.int64)], len(positions))
    columns = {
        USER_ID: pa.array(np.repeat(interactions.user_ids[user_index], group)),
        ITEM_SEQ: list_column(np.repeat(history, group, axis=0), pa.int64()),
        LIKES_LEVEL: pa.array(likes[targets]),
        VIEWS_LEVEL: pa.array(views[targets]),
        ITEM_ID: pa.array(targets),
    }
    if split != "test":
        columns[LABEL] = pa.array(label)
    return pa.table([columns[name] for name in arrow_schema.names], schema=arrow_schema), label


def _write_truth(truth: dict, path: str) -> None:
    """``truth.parquet``: split, row (position in the split), label of every valid/test row."""
    splits = np.concatenate([np.full(len(labels), split, dtype=object)
                             for split, labels in truth.items()])
    rows = np.concatenate([np.arange(len(labels), dtype=np.int64) for labels in truth.values()])
    pq.write_table(pa.table({"split": pa.array(splits, pa.string()), "row": pa.array(rows),
                             LABEL: pa.array(np.concatenate(list(truth.values())))}), path)


# ---------------------------------------------------------------------- stats
def file_facts(path: str) -> dict:
    """Name, size and sha256 of an input file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"name": os.path.basename(path), "bytes": os.path.getsize(path),
            "sha256": digest.hexdigest()}


def _stats(pairs, titles, interactions: Interactions, catalogue: Catalogue,
           options: FramingOptions, content: dict, rows: dict) -> dict:
    lengths = interactions.lengths
    valid_history = np.minimum(lengths - 2, options.seq_len)
    train_targets = np.maximum(lengths - 3, 0)
    cold = lambda split_offset: int((catalogue.train_count[  # noqa: E731
        catalogue.items[interactions.offsets[1:] - split_offset]] == 0).sum())
    return {
        "made_by": MADE_BY,
        "format_version": FORMAT_VERSION,
        "inputs": {"pairs": file_facts(pairs), "titles": file_facts(titles)},
        "parameters": asdict(options),
        "users": int(interactions.num_users),
        "interactions": int(len(interactions.videos)),
        "videos_per_user": {"min": int(lengths.min()), "median": float(np.median(lengths)),
                            "mean": round(float(lengths.mean()), 3), "max": int(lengths.max())},
        "items": int(catalogue.num_items),
        "items_seen_in_train_period": int((catalogue.train_count[1:] > 0).sum()),
        "cold_targets": {"valid": cold(2), "test": cold(1)},
        "rows": {split: int(rows[split]) for split in SPLITS},
        "positive_rate": rows["positive_rate"],
        "train_positives": int(train_targets.sum()),
        "valid_history_padding_share": round(
            1.0 - float(valid_history.sum()) / (len(lengths) * options.seq_len), 4),
        "hashtags": {"vocabulary": content["tags"], "items_with_tags": content["items_with_tags"]},
        "title_vectors": {"dim": options.dim, "titles_fitted": content["titles_fitted"],
                          "explained_variance": round(content["explained_variance"], 4)},
    }
