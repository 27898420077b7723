"""Request rows -> id arrays, and the one-line 400 messages (no model, no server needed)."""
from __future__ import annotations

import asyncio
import re

import numpy as np
import pyarrow as pa
import pytest

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.serving import optional
from fuxictr_mmctr.serving.artifact import ItemIds, write_id_map
from fuxictr_mmctr.serving.batcher import MicroBatcher
from fuxictr_mmctr.serving.rows import RequestError, merge, parse_rows
from fuxictr_mmctr.serving.signature import InputSpec, Signature

SIGNATURE = Signature(
    format="pt2", precision="fp32", files=["model.pt2"], max_len=4, padded_in_graph=False,
    item_vocab=31, ignored_fields=["user_id"],
    inputs=[InputSpec("item_id", "int64", ("batch",), "item", 31),
            InputSpec("item_seq", "int64", ("batch", "history"), "history", 31),
            InputSpec("likes_level", "int64", ("batch",), "side", 11),
            InputSpec("views_level", "int64", ("batch",), "side", 11)])
IDS = ItemIds(31)


def row(**changes):
    values = {"item_id": 7, "item_seq": [3, 9], "likes_level": 2, "views_level": 10,
              "user_id": 5}
    values.update(changes)
    return {key: value for key, value in values.items() if value is not ...}


def test_rows_become_left_padded_arrays():
    columns, count = parse_rows({"rows": [row(), row(item_seq=[], item_id=30),
                                          row(item_seq=[0, 0, 1, 2, 3, 4])]}, SIGNATURE, IDS)
    assert count == 3
    assert columns["item_id"].tolist() == [7, 30, 7]
    assert columns["item_seq"].tolist() == [[0, 0, 3, 9], [0, 0, 0, 0], [1, 2, 3, 4]]
    assert columns["likes_level"].dtype == np.int64 and columns["views_level"].tolist() == [10] * 3


def test_the_batch_is_as_wide_as_its_longest_history():
    columns, _ = parse_rows({"rows": [row(item_seq=[]), row(user_id=...)]}, SIGNATURE, IDS)
    assert columns["item_seq"].tolist() == [[0, 0], [3, 9]]
    columns, _ = parse_rows({"rows": [row(item_seq=[])]}, SIGNATURE, IDS)
    assert columns["item_seq"].tolist() == [[0]]                 # at least one column


@pytest.mark.parametrize("payload, message", [
    ([], "the body must be a JSON object {\"rows\": [...]}, got list"),
    ({}, "field rows is missing"),
    ({"rows": []}, "field rows is empty: send at least one row"),
    ({"rows": {}}, "field rows must be a list of row objects, got dict"),
    ({"rows": [row()], "extra": 1}, "unknown top-level field 'extra'"),
    ({"rows": [row(), 5]}, "row 1: must be an object of fields, got int"),
    ({"rows": [row(), row(item_id=...)]}, "row 1: field item_id is missing"),
    ({"rows": [row(color="red")]}, "row 0: unknown field 'color'"),
    ({"rows": [row(item_id=31)]}, "row 0, field item_id: unknown item id 31 (item ids are 1..30)"),
    ({"rows": [row(item_id=0)]}, "row 0, field item_id: 0 is the padding id, not an item"),
    ({"rows": [row(item_id="7")]}, "row 0, field item_id: expected an integer item id, got '7'"),
    ({"rows": [row(item_id=True)]}, "row 0, field item_id: expected an integer item id, got True"),
    ({"rows": [row(item_seq=[1, 2, 99])]}, "row 0, field item_seq[2]: unknown item id 99"),
    ({"rows": [row(item_seq=[False, 2])]},
     "row 0, field item_seq[0]: expected an integer item id, got False"),
    ({"rows": [row(item_seq=[None, 2])]},
     "row 0, field item_seq[0]: expected an integer item id, got None"),
    ({"rows": [row(item_seq=[1, 2, 3, 4, 5])]},
     "row 0, field item_seq: a history of 5 items is longer than max_len 4"),
    ({"rows": [row(item_seq="1,2")]}, "row 0, field item_seq: expected a list of item ids"),
    ({"rows": [row(likes_level=11)]}, "row 0, field likes_level: 11 is outside 0..10"),
    ({"rows": [row(views_level=2.5)]}, "row 0, field views_level: expected an integer, got 2.5"),
    ({"rows": [row(user_id="u1")]}, "row 0, field user_id: expected an integer, got 'u1'"),
])
def test_each_mistake_is_one_line_naming_field_and_row(payload, message):
    with pytest.raises(RequestError, match="^" + re.escape(message)) as caught:
        parse_rows(payload, SIGNATURE, IDS)
    assert "\n" not in str(caught.value)


def test_a_catalogue_with_its_own_ids_maps_them(tmp_path):
    keys = pa.array(["a", "b", "c"])
    written = write_id_map(type("Remap", (), {"keys": keys})(), tmp_path)
    ids = ItemIds.read(tmp_path, SIGNATURE.replace(id_map=written, item_vocab=4))
    columns, _ = parse_rows({"rows": [row(item_id="c", item_seq=["", "a", "b"])]},
                            SIGNATURE, ids)
    assert columns["item_id"].tolist() == [3] and columns["item_seq"].tolist() == [[1, 2]]
    assert ids.remap.apply(pa.array(["b", ""])).tolist() == [2, 0]
    with pytest.raises(RequestError, match=re.escape("field item_id: unknown item id 'z'")):
        parse_rows({"rows": [row(item_id="z")]}, SIGNATURE, ids)
    with pytest.raises(RequestError, match="expected a string item id, got 7"):
        parse_rows({"rows": [row(item_id=7)]}, SIGNATURE, ids)


def test_merge_pads_histories_to_the_widest():
    first = {"item_id": np.array([1]), "item_seq": np.array([[4]])}
    second = {"item_id": np.array([2, 3]), "item_seq": np.array([[5, 6, 7], [0, 0, 8]])}
    merged = merge([first, second], ["item_id", "item_seq"])
    assert merged["item_id"].tolist() == [1, 2, 3]
    assert merged["item_seq"].tolist() == [[0, 0, 4], [5, 6, 7], [0, 0, 8]]


def fake_model(calls):
    def score(columns):
        calls.append(len(columns["item_id"]))
        return columns["item_id"].astype(np.float32) * 10
    return score


def run_requests(batcher, sizes):
    async def main():
        await batcher.start()
        try:
            requests = [batcher.score({"item_id": np.arange(start, start + size),
                                       "item_seq": np.ones((size, 1 + start % 3), np.int64)}, size)
                        for start, size in zip(np.cumsum([0] + sizes[:-1]), sizes)]
            return await asyncio.gather(*requests)
        finally:
            await batcher.stop()
    return asyncio.run(main())


def test_concurrent_requests_share_model_calls_and_keep_their_rows():
    calls = []
    batcher = MicroBatcher(fake_model(calls), ["item_id", "item_seq"], max_batch_rows=8,
                           max_wait_ms=50)
    sizes = [1, 2, 3, 1, 5, 2, 20]
    results = run_requests(batcher, sizes)
    start = 0
    for size, result in zip(sizes, results):
        assert result.tolist() == [10.0 * i for i in range(start, start + size)]
        start += size
    assert sum(calls) == sum(sizes) and max(calls) <= 20
    assert len(calls) < len(sizes)                               # batched
    assert 20 in calls                                           # a large request runs alone


def test_without_micro_batching_each_request_is_one_call():
    calls = []
    batcher = MicroBatcher(fake_model(calls), ["item_id", "item_seq"], max_batch_rows=0)
    run_requests(batcher, [1, 2, 3])
    assert sorted(calls) == [1, 2, 3]


def test_a_failing_model_call_fails_its_requests_only():
    state = {"fail": True}

    def score(columns):
        if state.pop("fail", False):
            raise RuntimeError("boom")
        return np.zeros(len(columns["item_id"]), np.float32)

    async def main():
        batcher = MicroBatcher(score, ["item_id", "item_seq"], max_batch_rows=8, max_wait_ms=1)
        await batcher.start()
        one = {"item_id": np.arange(2), "item_seq": np.ones((2, 1), np.int64)}
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.score(one, 2)
        result = await batcher.score(one, 2)                     # the worker still runs
        await batcher.stop()
        return result

    assert asyncio.run(main()).tolist() == [0.0, 0.0]


def test_a_missing_package_names_the_extra(monkeypatch):
    with pytest.raises(UserError, match=re.escape(
            "fuxictr-mmctr serve needs the Python package no_such_package_xyz, which is not "
            "installed; install the serve extra: pip install -e \".[serve]\"")):
        optional.require("no_such_package_xyz", "fuxictr-mmctr serve")
