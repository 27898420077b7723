"""The data loader every model uses: splits as typed arrays, batches of ids on the device.

Two steps (docs/data_path.md):

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

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.data.arrays import ITEM_ID_COLUMNS, read_columns
from fuxictr_mmctr.data.batches import BatchLoader
from fuxictr_mmctr.errors import UserError, did_you_mean, location

__all__ = ["BatchLoader", "LOADER_OPTIONS", "SplitArrays", "VALIDATION_MODES", "check_validation",
           "load_split", "loader_options", "validation_mode"]

logger = logging.getLogger(__name__)

#: ``validation`` settings of a dataset config: what the dataset validator's findings do.
STRICT, WARN, OFF = "strict", "warn", "off"
VALIDATION_MODES = (STRICT, WARN, OFF)
#: Problems logged one line each under ``warn``; the rest are counted in one more line.
MAX_LOGGED_PROBLEMS = 20


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
               validate: bool = True, validation: str = STRICT,
               item_rows: int | None = None) -> SplitArrays:
    """Read a split (train/valid/test or any parquet of that schema) into :class:`SplitArrays`.

    Args:
        path: parquet file; labelled if it has a ``label`` column.
        schema: sizes for range checks; default the folder's ``schema.json``. Pass the trained
            dataset's schema for a file that lives elsewhere
            (:class:`~fuxictr_mmctr.data.catalogue.ItemCatalogue` does).
        cache_dir: cache root (default ``<folder>/.cache``); ``False`` disables the cache.
        remap: :class:`~fuxictr_mmctr.data.id_remap.ItemIdRemap` for catalogues whose item ids
            are not item-table rows; applied to ``item_id`` and ``item_seq``.
        validate: ``False`` skips the dataset validator (as ``validation="off"``).
        validation: what the dataset validator's findings do on a first (uncached) load:
            ``"strict"`` stops at the first, ``"warn"`` logs them, ``"off"`` skips the validator.
        item_rows: rows of the item table; an ``item_id``/``item_seq`` value at or beyond it
            stops the load whatever ``validation`` says (also on cached loads).

    Bad data raises :class:`UserError` with the first problem (file, column, row). Whatever
    ``validation`` says, the checks made while reading always stop the load: nulls, ragged
    lists, ids out of the vocabulary or beyond the item table, NaN/inf.
    """
    mode = check_validation(validation) if validate else OFF
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"{path}: file not found")
    if not os.path.isfile(path):  # a folder, or a pipe that would block the read forever
        raise UserError(f"{path}: not a regular file")
    folder = os.path.dirname(os.path.abspath(path))
    schema = schema or contract.load_schema(folder)
    try:
        labelled = contract.LABEL in pq.read_schema(path).names
    except (pa.ArrowException, OSError) as error:
        raise UserError(f"{path}: not a readable parquet file ({error})") from None
    table = _table_name(path, labelled)
    columns = schema.split_columns(table)

    def run_validator():
        # String ids of a remapped catalogue are not the contract's integers: the validator
        # would reject every id, so only the read-time checks run for them.
        if remap is None and mode != OFF:
            _validate(path, table, schema, mode, item_rows)

    # A cache written without strict validation must not pass for validated data later.
    loaded, from_cache = read_columns(path, columns, remap=remap, cache_dir=cache_dir,
                                      validate=run_validator,
                                      cache_tag=None if mode == STRICT else mode)
    if item_rows is not None:
        check_item_rows(loaded, item_rows, path)
    return SplitArrays(path=path, columns=loaded, from_cache=from_cache)


def validation_mode(params: dict) -> str:
    """The dataset config's ``validation`` setting (default ``"strict"``), checked.

    YAML reads an unquoted ``off`` as ``False`` (and ``on`` as ``True``); both are accepted.
    """
    return check_validation(params.get("validation", STRICT))


def check_validation(mode) -> str:
    """``mode`` if it is one of :data:`VALIDATION_MODES`, else a one-line :class:`UserError`."""
    if mode is False:
        return OFF
    if mode is True:
        return STRICT
    if isinstance(mode, str) and mode.lower() in VALIDATION_MODES:
        return mode.lower()
    raise UserError(f"dataset config: validation {mode!r} is not one of "
                    f"{', '.join(VALIDATION_MODES)}")


#: The dataset config's ``loader:`` block: option -> (default, what it does).
LOADER_OPTIONS = {
    "on_device": (False, "hold each split in the model device's memory and gather batches there"),
    "pin_memory": (None, "gather batches into pinned host memory (default: on for a GPU)"),
    "drop_last": (False, "skip the last, short training batch of each epoch"),
}


def loader_options(params: dict) -> dict:
    """The dataset config's ``loader:`` block with defaults filled in, checked:
    ``{"on_device": bool, "pin_memory": bool | None, "drop_last": bool}``.

    ``pin_memory: null`` (the default) pins for a GPU; ``drop_last`` applies to training
    batches only (evaluation always sees every row). A mistake is one :class:`UserError` line.
    """
    block = params.get("loader")
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise UserError(f"dataset config: loader must be a mapping of "
                        f"{', '.join(LOADER_OPTIONS)}, got {block!r}")
    options = {name: default for name, (default, _) in LOADER_OPTIONS.items()}
    for name, value in block.items():
        if name not in LOADER_OPTIONS:
            raise UserError(f"dataset config: unknown loader option {name!r}"
                            f"{did_you_mean(name, LOADER_OPTIONS)} (known: "
                            f"{', '.join(LOADER_OPTIONS)})")
        nullable = LOADER_OPTIONS[name][0] is None
        if not isinstance(value, bool) and not (nullable and value is None):
            raise UserError(f"dataset config: loader {name} must be True or False"
                            f"{' or null' if nullable else ''}, got {value!r}")
        options[name] = value
    if options["on_device"] and options["pin_memory"]:
        raise UserError("dataset config: loader on_device and pin_memory exclude each other (a "
                        "split held on the device is never copied from the host)")
    return options


def check_item_rows(columns: dict, item_rows: int, path) -> None:
    """Stop when an ``item_id (N,)`` or ``item_seq (N, L)`` value is ``>= item_rows``.

    The item table gathers by id, so such an id would read another item's row or fail on the
    device. One max per column keeps the clean case cheap; rows are searched only on failure.
    Runs on cached arrays too: the cache does not know which item_info it will meet.
    """
    for name in ITEM_ID_COLUMNS:
        values = columns.get(name)
        if values is None or values.size == 0 or int(values.max()) < item_rows:
            continue
        flat = np.asarray(values).reshape(-1)
        first = int(np.argmax(flat >= item_rows))
        row = first // (flat.size // len(values))  # values per row: 1, or L for item_seq
        value = int(flat[first])
        raise UserError(f"{location(path, name, row)}: item id {value} is beyond item_info "
                        f"({item_rows} rows)")


def _table_name(path, labelled: bool) -> str:
    """The contract table a file follows: its own name when it is a split, else by label."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem in contract.SPLITS and (stem in contract.LABELED_SPLITS) == labelled:
        return stem
    return contract.LABELED_SPLITS[0] if labelled else "test"


def _validate(path, table, schema, mode: str, item_rows: int | None) -> None:
    """Run the dataset validator: ``strict`` raises its first problem, ``warn`` logs them all."""
    try:
        from fuxictr_mmctr.data.validate import validate_table
    except ImportError:
        return  # convert_column's own checks still run while reading
    problems = validate_table(path, table, schema, item_rows=item_rows)
    if not problems:
        return
    if mode == STRICT:
        more = f" (+{len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}")
    for problem in problems[:MAX_LOGGED_PROBLEMS]:
        logger.warning("data validation: %s", problem)
    if len(problems) > MAX_LOGGED_PROBLEMS:
        logger.warning("data validation: and %d more problems in %s",
                       len(problems) - MAX_LOGGED_PROBLEMS, path)
