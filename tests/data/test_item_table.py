"""ItemTable.from_item_info: which columns, row alignment, padding, dtypes, caching."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.data.item_table import ItemTable
from fuxictr_mmctr.errors import UserError
from tests.builders import tiny_item_feature_map, write_dataset, write_table


def test_from_item_info_keeps_item_columns_as_typed_buffers(tmp_path):
    raw = write_dataset(tmp_path)["item_info"]
    feature_map = tiny_item_feature_map(pretrain_dim=16)
    table = ItemTable.from_item_info(tmp_path / "item_info.parquet", feature_map)
    assert table.names == (contract.ITEM_TAGS, contract.ITEM_EMB)  # item_id is the row itself
    assert table.num_rows == len(raw[contract.ITEM_ID])
    assert table.column(contract.ITEM_EMB).dtype == torch.float32
    assert table.column(contract.ITEM_TAGS).dtype == torch.int64
    assert not any(buffer.requires_grad for buffer in table.buffers())
    assert table.state_dict() == {}  # data, re-read from item_info, not checkpointed
    np.testing.assert_array_equal(table.column(contract.ITEM_EMB).numpy(), raw[contract.ITEM_EMB])
    again = ItemTable.from_item_info(tmp_path / "item_info.parquet", feature_map)
    assert torch.equal(again.column(contract.ITEM_TAGS), table.column(contract.ITEM_TAGS))
    assert any(path.name.startswith("item_info-") for path in (tmp_path / ".cache").iterdir())


def test_rows_follow_item_ids_and_padding_row_is_zero(tmp_path):
    ids = np.array([3, 1, 0])
    vectors = np.array([[3, 3], [1, 1], [9, 9]], dtype=np.float32)  # padding row not zero in file
    tags = np.array([[0, 3], [1, 1], [5, 5]])
    write_table(tmp_path / "item_info.parquet", {contract.ITEM_ID: ids, contract.ITEM_TAGS: tags,
                                                 contract.ITEM_EMB: vectors})
    table = ItemTable.from_item_info(tmp_path / "item_info.parquet",
                                     tiny_item_feature_map(pretrain_dim=2, tags=2), cache_dir=False)
    np.testing.assert_array_equal(table.column(contract.ITEM_EMB).numpy(),
                                  [[0, 0], [1, 1], [0, 0], [3, 3]])  # item 2 absent: zeros
    gathered = table(torch.tensor([[3, 0]]))
    np.testing.assert_array_equal(gathered[contract.ITEM_TAGS].numpy(), [[[0, 3], [0, 0]]])


def test_duplicate_item_id_is_user_error():
    arrays = {contract.ITEM_ID: np.array([0, 1, 2, 1]), contract.ITEM_TAGS: np.ones((4, 3)),
              contract.ITEM_EMB: np.ones((4, 16))}
    with pytest.raises(UserError, match=r"column item_id, row 3: item id 1 appears more than once"):
        ItemTable.from_item_info(arrays, tiny_item_feature_map(pretrain_dim=16))


def test_tag_out_of_vocab_is_user_error(tmp_path):
    raw = write_dataset(tmp_path)["item_info"]
    tags = raw[contract.ITEM_TAGS].copy()
    tags[7, 2] = 500
    write_table(tmp_path / "item_info.parquet", dict(raw, **{contract.ITEM_TAGS: tags}))
    with pytest.raises(UserError, match=r"column item_tags, row 7: value 500 is out of range"):
        ItemTable.from_item_info(tmp_path / "item_info.parquet",
                                 tiny_item_feature_map(pretrain_dim=16), cache_dir=False)
