"""Map a catalogue's own item ids (strings, large integers) to item-table rows 1..N.

The model looks item features up by row, so ``item_id`` and every ``item_seq`` entry must be
the row of that item in the item table. Integer ids that are unique, non-negative and below the
item_id vocabulary already are rows (MicroLens: item ``i`` is row ``i``), whatever order
item_info stores them in: the item table puts each item_info row at the row of its id. Any
other catalogue (ids like ``"v_8d1f"``, or ``10457`` with a smaller vocabulary) is mapped here,
with the same mapping applied to item_info, the target ``item_id`` and the ``item_seq`` history:

* item_info's ids in **sorted** order, skipping padding, become rows ``1..N`` (sorted, not file
  order, so item_info stored in another row order gives the same mapping and the same cache);
* padding (``null``, ``""`` for strings, ``0`` for integers) becomes row 0;
* an id not in item_info is a :class:`UserError` naming file, column and row.

:class:`~fuxictr_mmctr.data.catalogue.ItemCatalogue` decides once per run which case applies.
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
        keys = ids.filter(pc.invert(_is_padding(ids, self.is_string)))
        _check_unique(ids, keys, source)
        #: Real item ids, sorted: ``keys[r - 1]`` is the id of table row ``r``.
        self.keys = keys.take(pc.sort_indices(keys))
        #: item_info row i (file order) -> table row; padding rows -> 0.
        self.info_rows = self._rows(ids)

    @classmethod
    def from_item_info(cls, path) -> "ItemIdRemap":
        """The mapping defined by the ``item_id`` column of an item_info parquet file."""
        return cls(read_item_ids(path), source=os.fspath(path))

    @property
    def num_rows(self) -> int:
        """Rows of the remapped item table (items + padding row 0)."""
        return len(self.keys) + 1

    def fingerprint(self) -> str:
        """Short hash of the mapping, for cache folder names.

        The keys are sorted, so item_info stored in another row order hits the same cache.
        """
        digest = hashlib.sha1(str(self.keys.type).encode())
        # buffers()[0] is the validity bitmap: present or not depending on how padding was
        # written, and the keys hold no nulls, so it is left out.
        for buffer in self.keys.buffers()[1:]:
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
        return self._rows(values)

    def _rows(self, values: pa.Array) -> np.ndarray:
        """``(n,) int32`` table rows of ``values`` (ids of the keys' type); not found -> 0."""
        positions = pc.index_in(values, value_set=self.keys)
        return positions.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32) + 1


def read_item_ids(item_info_path) -> pa.Array:
    """item_info's ``item_id`` column, ``(n,)`` in file order (ints or strings)."""
    try:
        ids = pq.read_table(item_info_path, columns=[ITEM_ID]).column(ITEM_ID)
    except (pa.ArrowException, OSError, KeyError) as error:
        raise UserError(f"{location(item_info_path, ITEM_ID)}: cannot read item ids "
                        f"({error})") from None
    return ids.combine_chunks()


def ids_are_rows(ids, item_vocab: int | None = None) -> bool:
    """Whether item ids ``(n,)`` can be item-table rows as they are, in any order.

    True for integers without nulls that are non-negative, below ``item_vocab`` (default
    ``n``: a permutation of ``0..n-1``) and unique apart from the padding id 0. Such ids need no
    remap: the item table scatters each item_info row to the row of its id.
    """
    ids = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(ids)
    if not pat.is_integer(ids.type) or ids.null_count or len(ids) == 0:
        return False
    values = np.asarray(ids.to_numpy(zero_copy_only=False))
    bound = len(values) if item_vocab is None else int(item_vocab)
    if values.min() < 0 or values.max() >= bound:
        return False
    # A sort rather than a bincount: the config's vocab_size may be far larger than item_info.
    items = values[values != PADDING_ID]
    return len(np.unique(items)) == len(items)


def needs_remap(item_info_path, item_vocab: int | None = None) -> bool:
    """Whether item_info's ids must be mapped to rows (see :func:`ids_are_rows`)."""
    return not ids_are_rows(read_item_ids(item_info_path), item_vocab)


def remap_for(item_info_path, item_vocab: int | None = None) -> ItemIdRemap | None:
    """The mapping a dataset needs (``None`` when its ids already are table rows).

    ``item_vocab``: the item_id vocabulary size; without it the ids need no remap only when
    they are a permutation of ``0..n-1`` (n = item_info rows).
    """
    ids = read_item_ids(item_info_path)
    if ids_are_rows(ids, item_vocab):
        return None
    return ItemIdRemap(ids, source=os.fspath(item_info_path))


def _check_unique(ids: pa.Array, keys: pa.Array, source) -> None:
    """A repeated real item id is a :class:`UserError` naming its second item_info row."""
    if len(pc.unique(keys)) == len(keys):
        return
    counts = pc.value_counts(keys)
    duplicate = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"]
    rows = np.flatnonzero(np.asarray(pc.equal(ids, duplicate).fill_null(False)))
    raise UserError(f"{location(source, ITEM_ID, int(rows[1]))}: item id {duplicate.as_py()!r} "
                    f"appears more than once")


def _is_padding(values: pa.Array, is_string: bool) -> pa.Array:
    padding = pa.scalar("", values.type) if is_string else pa.scalar(PADDING_ID, values.type)
    return pc.fill_null(pc.equal(values, padding), True)
