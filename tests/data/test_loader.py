"""load_split + BatchLoader: typed arrays, cache, seeded shuffling, sharding, id remapping."""
from __future__ import annotations


import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.data.history_plan import PLAN_KEYS, with_plan, without_plan
from fuxictr_mmctr.data.id_remap import ItemIdRemap, remap_for
from fuxictr_mmctr.data.item_table import ItemTable
from fuxictr_mmctr.data.loader import BatchLoader, load_split
from fuxictr_mmctr.errors import UserError
from tests.builders import TINY, dataset_params, tiny_item_feature_map, write_dataset, write_table


@pytest.fixture
def dataset(tmp_path):
    folder = tmp_path / "ds"
    raw = write_dataset(folder)
    return folder, raw


def all_batches(loader):
    return [{name: values.clone() for name, values in batch.items()} for batch in loader]


def test_load_split_types_shapes_and_values(dataset):
    folder, raw = dataset
    train = load_split(folder / "train.parquet")
    assert train.num_rows == 50 and train.has_labels
    assert train.user_id.dtype == np.int64 and train.item_seq.dtype == np.int32
    assert train.item_seq.shape == (50, TINY.max_seq_len)
    assert train.likes_level.dtype == np.int32 and train.label.dtype == np.float32
    np.testing.assert_array_equal(train.item_seq, raw["train"][contract.ITEM_SEQ])
    np.testing.assert_array_equal(train.item_id, raw["train"][contract.ITEM_ID])
    test = load_split(folder / "test.parquet")
    assert not test.has_labels and test.label is None
    batch = next(iter(BatchLoader(test, batch_size=7)))
    assert contract.LABEL not in batch and batch[contract.ITEM_SEQ].dtype == torch.int64


def test_gathered_item_features_match_per_row_reference(dataset):
    folder, raw = dataset
    from fuxictr_mmctr.data.feature_map import build_feature_map

    feature_map = build_feature_map(dataset_params(folder))
    table = ItemTable.from_item_info(folder / "item_info.parquet", feature_map)
    loader = BatchLoader(load_split(folder / "valid.parquet"), batch_size=16, shuffle=True, seed=3)
    info = pq.read_table(folder / "item_info.parquet").to_pylist()
    by_id = {row[contract.ITEM_ID]: row for row in info}
    split_rows = pq.read_table(folder / "valid.parquet").to_pylist()
    order = loader.row_indices()
    for step, batch in enumerate(loader):
        rows = order[step * 16:(step + 1) * 16]
        target, history = table(batch[contract.ITEM_ID]), table(batch[contract.ITEM_SEQ])
        for b, row in enumerate(rows):
            reference = split_rows[row]
            assert batch[contract.ITEM_ID][b].item() == reference[contract.ITEM_ID]
            expected = by_id[reference[contract.ITEM_ID]]
            assert target[contract.ITEM_TAGS][b].tolist() == expected[contract.ITEM_TAGS]
            assert target[contract.ITEM_EMB][b].tolist() == expected[contract.ITEM_EMB]
            for position, item in enumerate(reference[contract.ITEM_SEQ]):
                tags = history[contract.ITEM_TAGS][b, position].tolist()
                vector = history[contract.ITEM_EMB][b, position].tolist()
                if item == contract.PADDING_ID:
                    assert not any(tags) and not any(vector)
                else:
                    assert tags == by_id[item][contract.ITEM_TAGS]
                    assert vector == by_id[item][contract.ITEM_EMB]


def test_shuffle_is_seeded_per_epoch(dataset):
    folder, _ = dataset
    train = load_split(folder / "train.parquet")
    first = BatchLoader(train, batch_size=8, shuffle=True, seed=5)
    second = BatchLoader(train, batch_size=8, shuffle=True, seed=5)
    a, b = all_batches(first), all_batches(second)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    first.set_epoch(1)
    c = all_batches(first)
    assert not torch.equal(a[0][contract.USER_ID], c[0][contract.USER_ID])
    assert sorted(torch.cat([x[contract.USER_ID] for x in c]).tolist()) == \
        sorted(train.user_id.tolist())


def test_even_shards_give_every_rank_the_same_steps(dataset):
    folder, _ = dataset
    train = load_split(folder / "train.parquet")  # 50 rows: 16 per rank, 2 left out per epoch
    for epoch in (0, 1):
        loaders = [BatchLoader(train, batch_size=5, shuffle=True, seed=1, rank=r, world_size=3,
                               even_shards=True) for r in range(3)]
        for loader in loaders:
            loader.set_epoch(epoch)
        shards = [loader.row_indices() for loader in loaders]
        assert [len(shard) for shard in shards] == [16, 16, 16]
        assert [len(loader) for loader in loaders] == [4, 4, 4]
        assert [len(list(loader)) for loader in loaders] == [4, 4, 4]
        assert len(set(np.concatenate(shards).tolist())) == 48  # no row twice
    uneven = [BatchLoader(train, batch_size=5, shuffle=True, seed=1, rank=r, world_size=3)
              for r in range(3)]
    assert [loader.shard_rows for loader in uneven] == [17, 17, 16]


@pytest.mark.parametrize("shuffle", [True, False])
def test_shards_cover_every_row_once(dataset, shuffle):
    folder, _ = dataset
    train = load_split(folder / "train.parquet")  # 50 rows, not divisible by 3
    loaders = [BatchLoader(train, batch_size=4, shuffle=shuffle, seed=1, rank=r, world_size=3)
               for r in range(3)]
    shards = [loader.row_indices() for loader in loaders]
    assert sorted(np.concatenate(shards).tolist()) == list(range(50))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    for loader, shard in zip(loaders, shards):
        seen = torch.cat([batch[contract.USER_ID] for batch in loader]).numpy()
        np.testing.assert_array_equal(seen, train.user_id[shard])
        assert len(loader) == len(list(loader))
    if not shuffle:  # evaluation: shards are contiguous runs of rows, in rank order
        assert all(np.all(np.diff(shard) == 1) for shard in shards)
        np.testing.assert_array_equal(np.concatenate(shards), np.arange(50))


def test_max_len_keeps_most_recent_items_and_drop_last(dataset):
    folder, raw = dataset
    train = load_split(folder / "train.parquet")
    loader = BatchLoader(train, batch_size=16, max_len=3, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    history = torch.cat([batch[contract.ITEM_SEQ] for batch in batches]).numpy()
    np.testing.assert_array_equal(history, raw["train"][contract.ITEM_SEQ][:48, -3:])


def test_on_device_gives_same_batches(dataset):
    folder, _ = dataset
    train = load_split(folder / "train.parquet")
    host = all_batches(BatchLoader(train, batch_size=8, shuffle=True, seed=2, max_len=4))
    device = all_batches(BatchLoader(train, batch_size=8, shuffle=True, seed=2, max_len=4,
                                     on_device=True))
    assert all(torch.equal(x[k], y[k]) for x, y in zip(host, device) for k in x)


def test_cache_returns_identical_arrays_without_rereading(dataset, monkeypatch):
    folder, _ = dataset
    first = load_split(folder / "train.parquet")
    assert not first.from_cache

    def no_reading(*args, **kwargs):
        raise AssertionError("parquet data was read again")

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", no_reading)
    second = load_split(folder / "train.parquet")
    assert second.from_cache
    for name, values in first.columns.items():
        assert second.columns[name].dtype == values.dtype
        np.testing.assert_array_equal(second.columns[name], values)


def test_string_item_ids_are_remapped_consistently(tmp_path):
    names = np.array(["", "v_b", "v_a", "v_c"], dtype=object)  # "" is the padding entry
    vectors = np.array([[0, 0], [1, 1], [2, 2], [3, 3]], dtype=np.float32)
    tags = np.array([[0, 0], [1, 2], [0, 3], [4, 5]])
    write_table(tmp_path / "item_info.parquet", {contract.ITEM_ID: names,
                                                 contract.ITEM_TAGS: tags,
                                                 contract.ITEM_EMB: vectors})
    write_table(tmp_path / "test.parquet", {
        contract.USER_ID: np.array([7, 8]),
        contract.ITEM_SEQ: [["", "v_c", "v_a"], ["v_b", "v_b", "v_c"]],
        contract.LIKES_LEVEL: np.array([1, 2]), contract.VIEWS_LEVEL: np.array([3, 4]),
        contract.ITEM_ID: np.array(["v_a", "v_c"], dtype=object)})
    schema = contract.Schema(max_seq_len=3, num_items=3, num_tags_per_item=2, item_emb_dim=2,
                             tag_vocab=6)
    remap = remap_for(tmp_path / "item_info.parquet")
    assert isinstance(remap, ItemIdRemap) and remap.num_rows == 4
    split = load_split(tmp_path / "test.parquet", schema=schema, remap=remap)
    table = ItemTable.from_item_info(
        {contract.ITEM_ID: names, contract.ITEM_TAGS: tags, contract.ITEM_EMB: vectors},
        tiny_item_feature_map(pretrain_dim=2, tags=2), remap=remap)
    target = table(torch.from_numpy(split.item_id.astype(np.int64)))
    np.testing.assert_array_equal(target[contract.ITEM_EMB].numpy(), [[2, 2], [3, 3]])
    history = table(torch.from_numpy(split.item_seq.astype(np.int64)))
    np.testing.assert_array_equal(history[contract.ITEM_EMB][0].numpy(), [[0, 0], [3, 3], [2, 2]])
    np.testing.assert_array_equal(history[contract.ITEM_TAGS][1].numpy(), [[1, 2], [1, 2], [4, 5]])
    write_table(tmp_path / "bad.parquet", {
        contract.USER_ID: np.array([7]), contract.ITEM_SEQ: [["", "", "v_zz"]],
        contract.LIKES_LEVEL: np.array([1]), contract.VIEWS_LEVEL: np.array([3]),
        contract.ITEM_ID: np.array(["v_a"], dtype=object)})
    with pytest.raises(UserError, match=r"bad.parquet, column item_seq, row 0: item id 'v_zz'"):
        load_split(tmp_path / "bad.parquet", schema=schema, remap=remap)


@pytest.mark.parametrize("column, values, message", [
    (contract.ITEM_ID, lambda raw: _with(raw[contract.ITEM_ID], 4, 999), r"column item_id, row 4: .*999"),
    (contract.ITEM_SEQ, lambda raw: _with(list(raw[contract.ITEM_SEQ]), 6, [1, 2]),
     r"column item_seq, row 6: .*length 2"),
    (contract.LIKES_LEVEL, lambda raw: _with(raw[contract.LIKES_LEVEL], 0, -1),
     r"column likes_level, row 0: .*-1"),
])
def test_bad_split_is_one_line_user_error(dataset, column, values, message):
    folder, raw = dataset
    columns = dict(raw["test"], **{column: values(raw["test"])})
    write_table(folder / "test.parquet", columns)
    with pytest.raises(UserError, match=message) as error:
        load_split(folder / "test.parquet", cache_dir=False)
    assert "\n" not in str(error.value) and column in str(error.value)


def test_nan_vector_in_item_info_is_user_error(dataset):
    folder, raw = dataset
    vectors = raw["item_info"][contract.ITEM_EMB].copy()
    vectors[5, 3] = np.nan
    write_table(folder / "item_info.parquet", dict(raw["item_info"], **{contract.ITEM_EMB: vectors}),
                contract.pyarrow_schema(TINY, contract.ITEM_INFO))
    with pytest.raises(UserError, match=r"item_info.parquet, column item_emb_d128, row 5: NaN"):
        ItemTable.from_item_info(folder / "item_info.parquet",
                                 tiny_item_feature_map(pretrain_dim=16), cache_dir=False)


def _with(values, row, value):
    values = list(values) if isinstance(values, list) else np.array(values)
    values[row] = value
    return values




# --- the history plan every batch carries ---------------------------------------------------

def test_every_batch_carries_the_plan_of_its_history(dataset):
    folder, _ = dataset
    split = load_split(folder / "train.parquet")
    for trim in (False, True):
        loader = BatchLoader(split, batch_size=8, shuffle=True, seed=3, trim_history=trim)
        for batch in loader:
            expected = with_plan(without_plan(batch))      # made again from the ids
            for key in PLAN_KEYS:
                assert torch.equal(batch[key], expected[key]), key
            assert batch["history_buckets"].device.type == "cpu"    # host-side numbers


def test_iter_from_skips_batches_without_gathering_them(dataset, monkeypatch):
    folder, _ = dataset
    loader = BatchLoader(load_split(folder / "train.parquet"), batch_size=8, shuffle=True,
                         seed=3)
    loader.set_epoch(2)
    expected = all_batches(loader)[3:]
    gathered = []
    original = BatchLoader._batch

    def counting_batch(self, rows, host_rows):
        gathered.append(len(host_rows))
        return original(self, rows, host_rows)

    monkeypatch.setattr(BatchLoader, "_batch", counting_batch)
    resumed = all_batches(loader.iter_from(3))
    assert len(gathered) == len(expected) == len(loader) - 3
    for got, want in zip(resumed, expected):
        assert all(torch.equal(got[name], want[name]) for name in want)
    assert list(loader.iter_from(len(loader))) == []


def test_pinned_buffers_mark_the_copies_on_the_stream_of_the_batches_device(monkeypatch):
    """With batches for cuda:1 and the process's current device cuda:0, the event that guards
    a pinned buffer must be recorded on cuda:1's stream (where the copies run)."""
    from fuxictr_mmctr.data.batches import _PinnedBuffers

    recorded = []

    class Event:
        def record(self, stream=None):
            recorded.append(stream)

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda device=None: ("stream of", torch.device(device)))
    buffers = _PinnedBuffers(torch.device("cuda", 1))
    buffers.record()
    assert recorded == [("stream of", torch.device("cuda", 1))]
