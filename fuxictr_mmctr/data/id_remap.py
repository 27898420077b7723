"""Map a catalogue's own item ids (strings, sparse integers) to item-table rows 1..N.

The model looks item features up by row, so ``item_id`` and every ``item_seq`` entry must be
the row of that item in the item table. MicroLens ids already are (row ``i`` is item ``i``); a
user catalogue with ids like ``"v_8d1f"`` or ``10457`` is mapped here, once, with the same
mapping applied to item_info, the target ``item_id`` and the ``item_seq`` history:

* item_info's ids, in file order and skipping padding, become rows ``1..N``;
* padding (``null``, ``""`` for strings, ``0`` for integers) becomes row 0;
* an id not in item_info is a :class:`UserError` naming file, column and row.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyarrow.types as pat

from fuxictr_mmctr.data.schema import ITEM_ID, PADDING_ID
from fuxictr_mmctr.errors import UserError, location


class ItemIdRemap:
    """A fixed mapping from raw item ids to item-table rows (padding -> 0).

    Args:
        item_ids: item_info's ``item_id`` column (pyarrow or numpy; ints or strings), one
            entry per item_info row, possibly including a padding entry.
        source: where the ids came from, for error messages.
    """

    def __init__(self, item_ids, source: str = "item_info"):
        ids = pa.array(item_ids) if not isinstance(item_ids, (pa.Array, pa.ChunkedArray)) else item_ids
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        self.source = source
        self.is_string = pat.is_string(ids.type) or pat.is_large_string(ids.type)
        keep = pc.invert(_is_padding(ids, self.is_string))
        self.keys = ids.filter(keep)
        #: item_info row i (file order) -> table row; padding rows -> 0.
        self.info_rows = np.zeros(len(ids), dtype=np.int64)
        self.info_rows[np.asarray(keep)] = np.arange(1, len(self.keys) + 1)
        unique = pc.unique(self.keys)
        if len(unique) != len(self.keys):
            counts = pc.value_counts(self.keys)
            duplicate = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"]
            raise UserError(f"{location(source, ITEM_ID)}: item id {duplicate} appears more than once")

    @classmethod
    def from_item_info(cls, path) -> "ItemIdRemap":
        """The mapping defined by the ``item_id`` column of an item_info parquet file."""
        try:
            ids = pq.read_table(path, columns=[ITEM_ID]).column(ITEM_ID)
        except (pa.ArrowException, OSError, KeyError) as error:
            raise UserError(f"{location(path, ITEM_ID)}: cannot read item ids ({error})") from None
        return cls(ids, source=os.fspath(path))

    @property
    def num_rows(self) -> int:
        """Rows of the remapped item table (items + padding row 0)."""
        return len(self.keys) + 1

    def fingerprint(self) -> str:
        """Short hash of the mapping, for cache folder names."""
        digest = hashlib.sha1()
        for buffer in self.keys.buffers():
            if buffer is not None:
                digest.update(memoryview(buffer))
        return digest.hexdigest()[:12]

    def apply(self, values, path=None, column=None, row_offset: int = 0,
              values_per_row: int = 1) -> np.ndarray:
        """Rows of ``values`` (a flat pyarrow/numpy array of raw ids) as int32; padding -> 0.

        ``path``/``column``/``row_offset``/``values_per_row`` (list length when ``values`` are
        a flattened list column) only make error messages point at the right row.
        """
        values = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if self.is_string != (pat.is_string(values.type) or pat.is_large_string(values.type)):
            raise UserError(f"{location(path, column)}: item ids are {values.type} but "
                            f"{self.source} has {self.keys.type} ids")
        if not self.is_string and values.type != self.keys.type:
            values = values.cast(self.keys.type)
        positions = pc.index_in(values, value_set=self.keys)
        unknown = pc.and_(pc.is_null(positions), pc.invert(_is_padding(values, self.is_string)))
        if pc.any(unknown).as_py():
            first = int(np.flatnonzero(np.asarray(unknown.fill_null(False)))[0])
            row = row_offset + first // values_per_row
            raise UserError(f"{location(path, column, row)}: item id "
                            f"{values[first].as_py()!r} is not in {self.source}")
        rows = positions.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32) + 1
        return rows


def needs_remap(item_info_path) -> bool:
    """Whether item_info's ids are anything but integers with ``item_id == row`` (MicroLens)."""
    try:
        ids = pq.read_table(item_info_path, columns=[ITEM_ID]).column(ITEM_ID).combine_chunks()
    except (pa.ArrowException, OSError, KeyError) as error:
        raise UserError(f"{location(item_info_path, ITEM_ID)}: cannot read item ids "
                        f"({error})") from None
    if not pat.is_integer(ids.type) or ids.null_count:
        return True
    return not np.array_equal(ids.to_numpy(), np.arange(len(ids)))


def remap_for(item_info_path) -> ItemIdRemap | None:
    """The mapping a dataset needs (``None`` when its ids already are table rows)."""
    return ItemIdRemap.from_item_info(item_info_path) if needs_remap(item_info_path) else None


def _is_padding(values: pa.Array, is_string: bool) -> pa.Array:
    padding = pa.scalar("", values.type) if is_string else pa.scalar(PADDING_ID, values.type)
    return pc.fill_null(pc.equal(values, padding), True)
