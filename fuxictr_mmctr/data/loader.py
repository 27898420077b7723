"""The data loader every model uses: splits as typed arrays, batches of ids on the device.

Two steps (DESIGN.md §6):

1. :func:`load_split` reads a parquet split once into contiguous typed arrays
   (:class:`SplitArrays`, see :mod:`fuxictr_mmctr.data.arrays` for dtypes and the cache).
2. :class:`~fuxictr_mmctr.data.batches.BatchLoader` yields batches of integer ids; item
   features are gathered on the model's device by :class:`~fuxictr_mmctr.data.item_table.ItemTable`.

Example::

    train = load_split("data/MicroLens_1M_x1/train.parquet")
    loader = BatchLoader(train, batch_size=8192, shuffle=True, seed=2025, device="cuda")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:      # {"item_seq": (B, 100) int64 on cuda, ...}
            ...
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.data.arrays import read_columns
from fuxictr_mmctr.data.batches import BatchLoader
from fuxictr_mmctr.errors import UserError

__all__ = ["BatchLoader", "SplitArrays", "load_split"]


@dataclass
class SplitArrays:
    """One split as arrays with ``num_rows`` rows each (``label`` absent for unlabelled data).

    ``columns``: ``user_id (N,) int64``, ``item_seq (N, L) int32``, ``likes_level``,
    ``views_level``, ``item_id`` ``(N,) int32`` and ``label (N,) float32``.
    """

    path: str
    columns: dict = field(repr=False)
    from_cache: bool = False

    @property
    def num_rows(self) -> int:
        return len(self.columns[contract.ITEM_ID])

    @property
    def has_labels(self) -> bool:
        return contract.LABEL in self.columns

    @property
    def label(self):
        """``(N,) float32`` or ``None`` for an unlabelled split."""
        return self.columns.get(contract.LABEL)

    def __getattr__(self, name):
        columns = self.__dict__.get("columns", {})
        if name in columns:
            return columns[name]
        raise AttributeError(name)

    def __len__(self) -> int:
        return self.num_rows


def load_split(path, schema: contract.Schema | None = None, cache_dir=None, remap=None,
               validate: bool = True) -> SplitArrays:
    """Read a split (train/valid/test or any parquet of that schema) into :class:`SplitArrays`.

    Args:
        path: parquet file; labelled if it has a ``label`` column.
        schema: sizes for range checks; default the folder's ``schema.json``.
        cache_dir: cache root (default ``<folder>/.cache``); ``False`` disables the cache.
        remap: :class:`~fuxictr_mmctr.data.id_remap.ItemIdRemap` for catalogues whose item ids
            are not item-table rows; applied to ``item_id`` and ``item_seq``.
        validate: run the dataset validator on a first (uncached) load.

    Bad data raises :class:`UserError` with the first problem (file, column, row).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"{path}: file not found")
    folder = os.path.dirname(os.path.abspath(path))
    schema = schema or contract.load_schema(folder)
    try:
        labelled = contract.LABEL in pq.read_schema(path).names
    except (pa.ArrowException, OSError) as error:
        raise UserError(f"{path}: not a readable parquet file ({error})") from None
    table = _table_name(path, labelled)
    columns = schema.split_columns(table)

    def run_validator():
        if remap is None and validate:
            _validate(path, table, schema)

    arrays, from_cache = read_columns(path, columns, remap=remap, cache_dir=cache_dir,
                                      validate=run_validator)
    return SplitArrays(path=path, columns=arrays, from_cache=from_cache)


def _table_name(path, labelled: bool) -> str:
    """The contract table a file follows: its own name when it is a split, else by label."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem in contract.SPLITS and (stem in contract.LABELED_SPLITS) == labelled:
        return stem
    return contract.LABELED_SPLITS[0] if labelled else "test"


def _validate(path, table, schema) -> None:
    """First problem found by the dataset validator, as a UserError (when it is installed)."""
    try:
        from fuxictr_mmctr.data.validate import validate_table
    except ImportError:
        return  # convert_column's own checks still run while reading
    problems = validate_table(path, table, schema)
    if problems:
        more = f" (+{len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}")


def concat_predictions(shard_predictions, shard_indices, num_rows: int) -> np.ndarray:
    """Predictions gathered from ranks back into row order.

    ``shard_predictions[r]``: ``(n_r,)`` in the order rank ``r``'s loader yielded rows,
    ``shard_indices[r]``: that loader's ``row_indices()``. Returns ``(num_rows,)``.
    """
    predictions = np.empty(num_rows, dtype=np.float64)
    seen = np.zeros(num_rows, dtype=bool)
    for values, indices in zip(shard_predictions, shard_indices):
        predictions[indices] = values
        seen[indices] = True
    if not seen.all():
        raise ValueError(f"{int((~seen).sum())} rows have no prediction")
    return predictions
