"""The item side table, kept on the model's device and gathered by item id."""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import torch
from torch import nn

from fuxictr_mmctr.data.schema import ITEM_ID, PADDING_ID, Column
from fuxictr_mmctr.errors import UserError, location


class ItemTable(nn.Module):
    """Item-side features as non-trainable buffers, one row per item (row 0 = padding).

    Args:
        columns: feature name -> array of shape ``(num_rows, ...)`` (e.g. ``item_tags``
            ``(N, 5)`` int, ``item_emb_d128`` ``(N, 128)`` float32). Every array has the same
            number of rows; row ``i`` belongs to item ``i``.

    Buffers are not saved in checkpoints (``persistent=False``): the table is data, re-read from
    item_info, and it follows ``model.to(device)``.

    Example::

        table = ItemTable({"item_tags": tags, "item_emb_d128": vectors})
        rows = table(torch.tensor([[0, 3, 7]]))   # {"item_tags": (1, 3, 5), "item_emb_d128": (1, 3, 128)}
    """

    def __init__(self, columns: Mapping[str, np.ndarray], num_rows: int | None = None):
        super().__init__()
        row_counts = {name: len(values) for name, values in columns.items()}
        if num_rows is not None:
            row_counts["num_rows"] = num_rows
        if len(set(row_counts.values())) > 1:
            raise ValueError(f"item table columns have different row counts: {row_counts}")
        self.names = tuple(columns)
        self.num_rows = next(iter(row_counts.values())) if row_counts else 0
        for name, values in columns.items():
            tensor = torch.as_tensor(np.ascontiguousarray(values))
            if tensor.dtype in (torch.int32, torch.int16, torch.uint8, torch.int8):
                tensor = tensor.long()
            self.register_buffer(name, tensor, persistent=False)

    @classmethod
    def from_item_info(cls, path_or_arrays, feature_map, remap=None,
                       cache_dir=None) -> "ItemTable":
        """The table of a dataset's ``source: item`` features (all but ``item_id``).

        Args:
            path_or_arrays: item_info parquet path (read once, cached like the splits), or a
                mapping ``{column: array}`` (with ``item_id`` when rows are not in id order).
            feature_map: says which columns and their vocab sizes / lengths.
            remap: :class:`~fuxictr_mmctr.data.id_remap.ItemIdRemap` when item ids are not rows.
            cache_dir: cache root for the parquet read (``False``: no cache).

        Row ``r`` of the result holds the item whose id is (or is remapped to) ``r``; rows no
        item maps to, and the padding row 0, are zeros. Vectors are float32, ids int64.
        """
        columns = item_table_columns(feature_map)
        if isinstance(path_or_arrays, Mapping):
            source = "item arrays"
            missing = [c.name for c in columns if c.name not in path_or_arrays]
            if missing:
                raise UserError(f"item arrays: column {missing[0]} is missing")
            from fuxictr_mmctr.data.arrays import array_dtype

            arrays = {c.name: np.asarray(path_or_arrays[c.name], dtype=array_dtype(c))
                      for c in columns}
            item_ids = path_or_arrays.get(ITEM_ID)
            if item_ids is not None and remap is not None:
                item_ids = remap.apply(np.asarray(item_ids), source, ITEM_ID)
        else:
            from fuxictr_mmctr.data.arrays import read_columns

            source = os.fspath(path_or_arrays)
            read, _ = read_columns(source, (Column(ITEM_ID, "int"),) + columns, remap=remap,
                                   cache_dir=cache_dir)
            item_ids = read.pop(ITEM_ID)
            arrays = read
        aligned, num_rows = align_rows(arrays, item_ids,
                                       remap.num_rows if remap is not None else None, source)
        return cls(aligned, num_rows=num_rows)

    def column(self, name: str) -> torch.Tensor:
        """The whole column ``name``: ``(num_rows, ...)``."""
        return getattr(self, name)

    def forward(self, item_ids: torch.Tensor, names=None) -> dict[str, torch.Tensor]:
        """Gather rows: ``item_ids (...) int64 -> {name: (..., *feature_shape)}``."""
        names = self.names if names is None else names
        flat_ids = item_ids.reshape(-1)
        # index_select on flat ids: ~1.6x faster than advanced indexing for (B, L) ids on CPU.
        return {name: self.column(name).index_select(0, flat_ids)
                .view(*item_ids.shape, *self.column(name).shape[1:]) for name in names}


def item_table_columns(feature_map) -> tuple[Column, ...]:
    """Columns the item table keeps: ``source: item`` features except ``item_id``, as
    :class:`~fuxictr_mmctr.data.schema.Column` (kinds int / int_list / float_list / float)."""
    from fuxictr_mmctr.data.feature_map import VECTOR_TYPES, item_features

    columns = []
    for name in item_features(feature_map):
        spec = feature_map.features[name]
        if name == ITEM_ID:
            continue
        if spec["type"] in VECTOR_TYPES:
            columns.append(Column(name, "float_list", length=int(spec["pretrain_dim"])))
        elif spec["type"] == "sequence":
            columns.append(Column(name, "int_list", length=int(spec["max_len"]),
                                  vocab=spec.get("vocab_size")))
        elif spec["type"] == "numeric":
            columns.append(Column(name, "float"))
        else:
            columns.append(Column(name, "int", vocab=spec.get("vocab_size")))
    return tuple(columns)


def align_rows(arrays: Mapping[str, np.ndarray], item_ids, num_rows=None,
               source="item_info") -> tuple[dict[str, np.ndarray], int]:
    """Put item_info rows at the row of their item id; row 0 (padding) and gaps are zeros.

    ``item_ids (n,)`` int (already remapped) or ``None`` (rows are already in id order).
    Returns ``(arrays, rows)``: arrays of ``rows = max(num_rows, max id + 1)`` rows (owned
    copies, not memory maps).
    """
    if item_ids is not None and np.array_equal(item_ids, np.arange(len(item_ids))):
        item_ids = None  # already in id order (MicroLens): no scatter needed
    if item_ids is None:
        aligned = {name: np.array(values) for name, values in arrays.items()}
        rows = len(next(iter(aligned.values()))) if aligned else int(num_rows or 0)
    else:
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if item_ids.size and item_ids.min() < 0:
            row = int(np.flatnonzero(item_ids < 0)[0])
            raise UserError(f"{location(source, ITEM_ID, row)}: negative item id")
        counts = np.bincount(item_ids, minlength=1)
        counts[PADDING_ID] = 0
        if (counts > 1).any():
            duplicate = int(np.flatnonzero(counts > 1)[0])
            row = int(np.flatnonzero(item_ids == duplicate)[1])
            raise UserError(f"{location(source, ITEM_ID, row)}: item id {duplicate} appears "
                            f"more than once")
        rows = max(int(item_ids.max(initial=0)) + 1, num_rows or 0)
        aligned = {}
        for name, values in arrays.items():
            table = np.zeros((rows,) + values.shape[1:], dtype=values.dtype)
            table[item_ids] = values
            aligned[name] = table
    for table in aligned.values():
        table[PADDING_ID] = 0  # padding never carries features, whatever item_info holds there
    return aligned, rows
