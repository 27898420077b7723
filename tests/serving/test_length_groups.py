"""A batch scored by an artifact is cut into history-length groups, one graph call each, and
the scores come back in row order (no model needed: a runner that records its calls)."""
from __future__ import annotations

import dataclasses

import numpy as np

from fuxictr_mmctr.serving.artifact import MIN_ROWS_TO_GROUP, Artifact, ItemIds, length_groups
from fuxictr_mmctr.serving.signature import InputSpec, Signature

MAX_LEN = 40
SIGNATURE = Signature(
    format="pt2", precision="fp32", files=["model.pt2"], max_len=MAX_LEN, padded_in_graph=False,
    item_vocab=100, ignored_fields=["user_id"],
    inputs=[InputSpec("item_id", "int64", ("batch",), "item", 100),
            InputSpec("item_seq", "int64", ("batch", "history"), "history", 100),
            InputSpec("likes_level", "int64", ("batch",), "side", 11)])


class RecordingRunner:
    """A graph stand-in whose score depends on the real history items only (as an exported
    model's with the history as given): target + 0.5 * likes + sum of history ids."""

    def __init__(self):
        self.widths = []

    def __call__(self, arrays):
        item_id, item_seq, likes = arrays
        self.widths.append(item_seq.shape[1])
        return (item_id + 0.5 * likes + item_seq.sum(axis=1)).astype(np.float32)


def batch_of(lengths, width=MAX_LEN, seed=0):
    rng = np.random.default_rng(seed)
    item_seq = np.zeros((len(lengths), width), dtype=np.int64)
    for row, length in enumerate(lengths):
        if length:
            item_seq[row, -length:] = rng.integers(1, 100, length)
    return {"item_id": rng.integers(1, 100, len(lengths)), "item_seq": item_seq,
            "likes_level": rng.integers(0, 11, len(lengths))}


def test_rows_are_grouped_on_the_bucket_ladder():
    columns = batch_of([0, 1, 8, 9, 16, 17, 33, 40, 3])
    groups = length_groups(columns["item_seq"])
    assert [width for _, width in groups] == [8, 16, 32, 40]
    assert [rows.tolist() for rows, _ in groups] == [[0, 1, 2, 8], [3, 4], [5], [6, 7]]


def test_one_call_per_group_and_the_scores_in_row_order():
    columns = batch_of([0, 1, 8, 9, 16, 17, 33, 40, 3] * 40, seed=1)      # 360 rows
    runner = RecordingRunner()
    artifact = Artifact("folder", SIGNATURE, runner, ItemIds(100))
    grouped = artifact.logits(columns)
    assert sorted(runner.widths) == [8, 16, 32, 40]
    whole = artifact.logits(columns, by_length=False)
    assert runner.widths[-1] == MAX_LEN
    np.testing.assert_array_equal(grouped, whole)


def test_a_batch_of_short_histories_is_called_at_their_width():
    runner = RecordingRunner()
    artifact = Artifact("folder", SIGNATURE, runner, ItemIds(100))
    artifact.logits(batch_of([2, 5, 0, 7] * 100))
    assert runner.widths == [8]


def test_a_small_batch_is_one_call_as_it_is():
    runner = RecordingRunner()
    artifact = Artifact("folder", SIGNATURE, runner, ItemIds(100))
    artifact.logits(batch_of([2, 40] * ((MIN_ROWS_TO_GROUP - 1) // 2)))
    assert runner.widths == [MAX_LEN]


def test_a_graph_that_pads_the_history_itself_gets_the_batch_as_it_is():
    runner = RecordingRunner()
    padded = dataclasses.replace(SIGNATURE, padded_in_graph=True)
    Artifact("folder", padded, runner, ItemIds(100)).logits(batch_of([2, 5, 40] * 100))
    assert runner.widths == [MAX_LEN]
