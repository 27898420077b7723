"""Check a dataset folder against the data contract (``fuxictr-mmctr validate DIR``).

Every problem becomes one line naming file, column and row, e.g.::

    train.parquet, column item_seq, row 17: list has length 99, expected 100 (and 341 more rows)

A check that fails on many rows gives one line per (file, column, check): the first failing row
and how many more rows fail. Bad data never raises; a missing folder, a missing file or a file
that is not parquet is one line too.

item_info's integer ids are judged as training judges them: rows may come in any order (each
row is placed at the row of its id; an order other than ``0..N-1`` is a *note*, information
that is no problem), ids must be unique, and a split naming an id item_info lacks is a problem
(training would give that item all-zero features). The padding item is the row whose id is 0.

Files are streamed in record batches of :data:`BATCH_ROWS` rows, so memory stays bounded on the
full MicroLens train split (3.6M rows x 100-long ``item_seq``). Every check works on whole
columns of a batch as numpy arrays: list columns are taken apart into per-row lengths and one
flat value array, and fixed-length rows are viewed as an ``(n, L)`` matrix.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fuxictr_mmctr.data.schema import (
    ITEM_ID,
    ITEM_INFO,
    ITEM_SEQ,
    PADDING_ID,
    SCHEMA_FILE,
    SPLITS,
    Column,
    Schema,
    load_schema,
    split_file,
)
from fuxictr_mmctr.errors import UserError, location

#: Rows per record batch; 2**18 rows of a 100-long int64 list is ~210 MB of values.
BATCH_ROWS = 1 << 18

#: item_info needs the padding row and at least one real item.
MIN_ITEM_ROWS = 2


@dataclass(frozen=True)
class Problem:
    """One finding: where it is, what is wrong, and how many further rows fail the same check.

    ``column`` and ``row`` are ``None`` for file-level problems (missing file, empty split).
    """

    file: str
    column: str | None
    row: int | None
    message: str
    more_rows: int = 0
    #: Information, not a problem (e.g. item_info rows in another order than their ids).
    note: bool = False

    def __str__(self) -> str:
        plural = "s" if self.more_rows > 1 else ""
        more = f" (and {self.more_rows} more row{plural})" if self.more_rows else ""
        return f"{location(self.file, self.column, self.row)}: {self.message}{more}"


# ---------------------------------------------------------------------------------------------
# public API


def validate_dataset(folder, schema: Schema | None = None) -> list[str]:
    """Every problem of the dataset in ``folder`` as one line each; ``[]`` when it is clean.

    ``schema`` defaults to :func:`~fuxictr_mmctr.data.schema.load_schema` of the folder.
    """
    return dataset_report(folder, schema)[0]


def dataset_report(folder, schema: Schema | None = None) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` of the dataset in ``folder``, one line each (see :class:`Problem`)."""
    found = find_problems(folder, schema)
    return ([str(p) for p in found if not p.note], [str(p) for p in found if p.note])


def validate_table(path, table: str, schema: Schema, *, item_rows: int | None = None) -> list[str]:
    """Problems of one file (``table`` is ``"train"``, ``"valid"``, ``"test"`` or ``"item_info"``).

    Item ids are bounded by ``item_rows``; when ``None`` it is the row count of
    ``item_info.parquet`` next to ``path`` if that file is usable, else ``schema.item_vocab``.
    """
    if item_rows is None:
        sibling = os.path.join(os.path.dirname(os.fspath(path)), split_file(ITEM_INFO))
        item_rows = _item_rows(sibling, schema)
    return [str(problem) for problem in check_table(path, table, schema, item_rows=item_rows)
            if not problem.note]


def find_problems(folder, schema: Schema | None = None) -> list[Problem]:
    """Structured form of :func:`dataset_report` (problems and notes): item_info first, then
    train, valid, test."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return [Problem(folder, None, None, "dataset folder does not exist")]
    if schema is None:
        try:
            schema = load_schema(folder)
        except UserError as error:
            schema_path = os.path.join(folder, SCHEMA_FILE)
            message = str(error).removeprefix(f"{schema_path}: ")
            return [Problem(schema_path, None, None, message)]
    item_path = os.path.join(folder, split_file(ITEM_INFO))
    items = _ItemIds.read(item_path, schema)
    problems = []
    for table in (ITEM_INFO,) + SPLITS:
        problems += check_table(os.path.join(folder, split_file(table)), table, schema,
                                item_rows=items.rows, name=split_file(table), items=items)
    return problems


def check_table(path, table: str, schema: Schema, *, item_rows: int | None = None,
                name: str | None = None, items: "_ItemIds | None" = None) -> list[Problem]:
    """Problems (and notes) of one file. ``name`` is how lines call the file (default:
    ``path``); ``items`` (item_info's ids) adds the checks that need them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = os.fspath(path)
    name = path if name is None else name
    item_rows = schema.item_vocab if item_rows is None else item_rows
    if not os.path.exists(path):
        return [Problem(name, None, None, "file is missing")]
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as error:
        return [Problem(name, None, None, f"not a readable parquet file ({_one_line(error)})")]
    try:
        problems, checked = _header_problems(parquet, table, schema, name)
        if checked and parquet.metadata.num_rows > 0:
            problems += _row_problems(parquet, table, schema, item_rows, checked, name, items)
        if table == ITEM_INFO and items is not None:
            problems += items.problems(name)
        return problems
    finally:
        parquet.close()


def _header_problems(parquet, table: str, schema: Schema, name: str):
    """Missing columns, wrong dtypes and row counts from the footer alone.

    Returns ``(problems, columns whose dtype fits and whose rows can be checked)``.
    """
    file_schema = parquet.schema_arrow
    problems, checked = [], []
    for column in schema.columns(table):
        copies = len(file_schema.get_all_field_indices(column.name))
        if copies != 1:
            message = "column is missing" if copies == 0 else f"column appears {copies} times"
            problems.append(Problem(name, column.name, None, message))
            continue
        dtype_problem = _dtype_problem(column, file_schema.field(column.name).type)
        if dtype_problem:
            problems.append(Problem(name, column.name, None, dtype_problem))
        else:
            checked.append(column)
    if table == ITEM_INFO:
        for column in _extra_item_columns(parquet, schema):
            dtype_problem = _dtype_problem(column, file_schema.field(column.name).type)
            if dtype_problem:
                problems.append(Problem(name, column.name, None, dtype_problem))
            else:
                checked.append(column)

    num_rows = parquet.metadata.num_rows
    if num_rows == 0:
        problems.append(Problem(name, None, None, "file has 0 rows"))
    elif table == ITEM_INFO and num_rows < MIN_ITEM_ROWS:
        problems.append(Problem(name, None, None,
                                f"item_info has {num_rows} row(s), expected at least "
                                f"{MIN_ITEM_ROWS} (padding row 0 and one item)"))
    return problems, checked


def _extra_item_columns(parquet, schema: Schema) -> list[Column]:
    """item_info columns beyond the contract that are checked when present: the per-item
    levels of ``fuxictr-mmctr items`` (``< level_vocab``, padding row 0) and every further
    float-vector column (one width, that of its first non-null row among the first two; finite;
    padding row all zeros). Other extra columns are ignored."""
    import pyarrow.types as pat

    from fuxictr_mmctr.data.item_features import LEVEL_COLUMNS

    file_schema = parquet.schema_arrow
    contract_names = {column.name for column in schema.item_columns()}
    columns = [Column(name, "int", vocab=schema.level_vocab) for name in LEVEL_COLUMNS.values()
               if len(file_schema.get_all_field_indices(name)) == 1]
    for field in file_schema:
        is_list = (pat.is_list(field.type) or pat.is_large_list(field.type)
                   or pat.is_fixed_size_list(field.type))
        if field.name in contract_names or not is_list:
            continue
        if not pat.is_floating(field.type.value_type):
            continue
        if len(file_schema.get_all_field_indices(field.name)) != 1:
            continue
        width = _first_vector_width(parquet, field.name)
        if width is not None:
            columns.append(Column(field.name, "float_list", length=width))
    return columns


def _first_vector_width(parquet, name: str) -> int | None:
    """Length of the first non-null vector among the first two rows; ``None`` if there is none."""
    import pyarrow as pa

    try:
        batch = next(parquet.iter_batches(batch_size=2, columns=[name]))
    except (pa.ArrowException, OSError, ValueError, StopIteration):
        return None
    for value in batch.column(0):
        if value.is_valid:
            return len(value.values)
    return None


def _row_problems(parquet, table: str, schema: Schema, item_rows: int, columns, name: str,
                  items: "_ItemIds | None" = None):
    """Value checks of ``columns``, streamed in batches of :data:`BATCH_ROWS` rows."""
    import pyarrow as pa

    findings = _Findings()
    checks = _TableChecks(table, schema, item_rows, findings, items)
    problems = []
    row_offset = 0
    try:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS,
                                          columns=[column.name for column in columns]):
            for column in columns:
                checks.run(column, batch.column(column.name), row_offset)
            row_offset += batch.num_rows
    except (pa.ArrowException, OSError, ValueError) as error:
        problems.append(Problem(name, None, row_offset,
                                f"could not read the file from here on ({_one_line(error)})"))
    return problems + findings.problems(name)


# ---------------------------------------------------------------------------------------------
# per-file helpers


@dataclass
class _ItemIds:
    """item_info's integer ids, read once: what the splits and item_info are judged by.

    ``rows``: item-table rows (max id + 1); ``missing``: ``(rows,)`` bool, True for an id below
    ``rows`` that item_info lacks (padding 0 excluded), ``None`` when the ids are unusable (the
    row checks of item_info report why); ``padding_row``: the item_info row holding id 0.
    """

    rows: int
    missing: np.ndarray | None = None
    padding_row: int | None = 0
    ids: np.ndarray | None = None

    @classmethod
    def read(cls, item_path: str, schema: Schema) -> "_ItemIds":
        import pyarrow as pa
        import pyarrow.parquet as pq
        import pyarrow.types as pat

        rows = _item_rows(item_path, schema)
        try:
            column = pq.read_table(item_path, columns=[ITEM_ID]).column(ITEM_ID)
        except (pa.ArrowException, OSError, ValueError, KeyError):
            return cls(rows)
        if not pat.is_integer(column.type) or column.null_count or len(column) < MIN_ITEM_ROWS:
            return cls(rows)
        ids = column.to_numpy().astype(np.int64)
        if ids.min() < 0 or ids.max() >= max(schema.item_vocab, len(ids)):
            return cls(rows)  # negative (reported by the row checks) or ids training remaps
        rows = int(ids.max()) + 1
        missing = np.ones(rows, dtype=bool)
        missing[ids] = False
        missing[PADDING_ID] = False
        padding = np.flatnonzero(ids == PADDING_ID)
        return cls(rows, missing, int(padding[0]) if padding.size else None, ids)

    def problems(self, name: str) -> list[Problem]:
        """Duplicate ids (a problem, as in training) and rows out of id order (a note)."""
        if self.ids is None:
            return []
        found = []
        counts = np.bincount(self.ids)
        counts[PADDING_ID] = min(counts[PADDING_ID], 1)
        if (counts > 1).any():
            duplicate = int(np.flatnonzero(counts > 1)[0])
            row = int(np.flatnonzero(self.ids == duplicate)[1])
            found.append(Problem(name, ITEM_ID, row, f"item id {duplicate} appears more than "
                                                     f"once", int((counts > 1).sum()) - 1))
        out_of_order = np.flatnonzero(self.ids != np.arange(len(self.ids)))
        if out_of_order.size:
            row = int(out_of_order[0])
            found.append(Problem(name, ITEM_ID, row, f"holds item {self.ids[row]}: rows are not "
                                 f"in id order, which training accepts (each row is placed at "
                                 f"its id)", note=True))
        return found


def _item_rows(item_path: str, schema: Schema) -> int:
    """Rows of item_info from the parquet footer; ``schema.item_vocab`` when it is unusable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(item_path)
    except (pa.ArrowException, OSError, ValueError):
        return schema.item_vocab
    rows = parquet.metadata.num_rows
    parquet.close()
    return rows if rows >= MIN_ITEM_ROWS else schema.item_vocab


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _dtype_problem(column: Column, arrow_type) -> str | None:
    """Why ``arrow_type`` does not fit ``column``, or ``None`` when it does."""
    import pyarrow.types as pat

    if column.kind == "int":
        ok, expected = pat.is_integer(arrow_type), "an integer type"
    elif column.kind == "label":
        ok = pat.is_integer(arrow_type) or pat.is_floating(arrow_type)
        expected = "an integer or float type"
    else:
        is_list = (pat.is_list(arrow_type) or pat.is_large_list(arrow_type)
                   or pat.is_fixed_size_list(arrow_type))
        if column.kind == "int_list":
            ok = is_list and pat.is_integer(arrow_type.value_type)
            expected = "a list of integers"
        else:
            ok = is_list and pat.is_floating(arrow_type.value_type)
            expected = "a list of floats"
    return None if ok else f"dtype is {arrow_type}, expected {expected}"


class _Findings:
    """Per (column, check): the first failing row, its message and the number of failing rows."""

    def __init__(self):
        self._found: dict[tuple[str, str], list] = {}

    def add(self, column: str, check: str, bad_rows: np.ndarray, row_offset: int,
            describe: Callable[[int], str]) -> None:
        """Record ``bad_rows`` (sorted batch-local row indices); ``describe(local_row)`` -> text."""
        if len(bad_rows) == 0:
            return
        key = (column, check)
        if key not in self._found:
            first = int(bad_rows[0])
            self._found[key] = [row_offset + first, describe(first), 0]
        self._found[key][2] += len(bad_rows)

    def problems(self, name: str) -> list[Problem]:
        return [Problem(name, column, row, message, count - 1)
                for (column, _), (row, message, count) in self._found.items()]


class _ListBatch:
    """A list column of one batch taken apart: ``lengths (n,)``, ``offsets (n+1,)``, ``values``.

    Null rows have length 0 and are flagged in ``null_rows (n,) bool``; null elements are
    flagged in ``null_values`` and read as 0 in ``values`` (they are reported separately).
    """

    def __init__(self, array):
        import pyarrow.compute as pc

        self.null_rows = _null_mask(array)
        self.lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
        self.offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.offsets[1:])
        flat = array.flatten()      # skips the slots of null rows, matching ``offsets``
        self.null_values = _null_mask(flat)
        if flat.null_count:
            flat = flat.fill_null(0)
        self.values = flat.to_numpy(zero_copy_only=False)

    def rows_of(self, bad_values: np.ndarray) -> np.ndarray:
        """Sorted rows holding a flagged value; ``bad_values`` is a bool mask over ``values``."""
        # Running count of flagged values, differenced at the row boundaries: O(values), no sort.
        running = np.zeros(len(bad_values) + 1, dtype=np.int64)
        np.cumsum(bad_values, out=running[1:])
        return np.flatnonzero(running[self.offsets[1:]] > running[self.offsets[:-1]])

    def matrix(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, mat)``: the rows holding ``length`` non-null values, as ``(k, length)``."""
        fits = (self.lengths == length) & ~self.null_rows
        if self.null_values.any():
            fits[self.rows_of(self.null_values)] = False
        if fits.all():
            return np.arange(len(fits)), self.values.reshape(len(fits), length)
        rows = np.flatnonzero(fits)
        return rows, self.values[self.offsets[rows][:, None] + np.arange(length)]


def _null_mask(array) -> np.ndarray:
    if array.null_count == 0:
        return np.zeros(len(array), dtype=bool)
    return array.is_null().to_numpy(zero_copy_only=False)


class _TableChecks:
    """The checks of one table, applied batch by batch to each column that has the right dtype."""

    def __init__(self, table: str, schema: Schema, item_rows: int, findings: _Findings,
                 items: _ItemIds | None = None):
        self.table = table
        self.schema = schema
        self.item_rows = item_rows
        self.findings = findings
        self.items = items if items is not None else _ItemIds(item_rows)

    def run(self, column: Column, array, row_offset: int) -> None:
        if column.kind in ("int", "label"):
            self._scalar(column, array, row_offset)
        else:
            self._list(column, _ListBatch(array), row_offset)

    def _vocab(self, column: Column) -> int | None:
        # Item ids are bounded by the real item table, which may differ from the schema's size.
        return self.item_rows if column.name in (ITEM_ID, ITEM_SEQ) else column.vocab

    def _range_message(self, column: Column, value) -> str:
        if column.name in (ITEM_ID, ITEM_SEQ):
            return f"item id {value} is outside item_info ({self.item_rows} rows)"
        return f"value {value} is outside the vocabulary 0..{self._vocab(column) - 1}"

    # scalars ---------------------------------------------------------------------------------

    def _scalar(self, column: Column, array, row_offset: int) -> None:
        add = self.findings.add
        null_rows = _null_mask(array)
        add(column.name, "null", np.flatnonzero(null_rows), row_offset, lambda _: "value is null")
        if array.null_count:
            array = array.fill_null(0)
        values = array.to_numpy(zero_copy_only=False)

        if column.kind == "label":
            bad = np.flatnonzero(~((values == 0) | (values == 1)) & ~null_rows)
            add(column.name, "label", bad, row_offset,
                lambda row: f"label is {values[row]}, expected 0 or 1")
            return

        if column.name == ITEM_ID and self.table == ITEM_INFO:
            # Any order and any size: _ItemIds judges the ids as a whole (duplicates, order).
            self._int_range(column, values, row_offset, np.flatnonzero, bounded=False)
            return
        self._int_range(column, values, row_offset, np.flatnonzero)
        padding = self._padding_row(row_offset, len(values))
        if self.table == ITEM_INFO and padding is not None and not null_rows[padding] \
                and values[padding] != 0:
            add(column.name, "padding row", np.array([padding]), row_offset,
                lambda _: "padding row 0 must be 0 (the padding item has no features)")
        if column.name == ITEM_ID:
            add(column.name, "padding target", np.flatnonzero((values == PADDING_ID) & ~null_rows),
                row_offset, lambda _: f"target item_id is {PADDING_ID}, the padding id")

    def _padding_row(self, row_offset: int, num_rows: int) -> int | None:
        """Batch-local row of the padding item (item_info's id-0 row) if this batch holds it."""
        padding = self.items.padding_row
        if padding is None or not row_offset <= padding < row_offset + num_rows:
            return None
        return padding - row_offset

    def _int_range(self, column: Column, values: np.ndarray, row_offset: int,
                   rows_of: Callable[[np.ndarray], np.ndarray], bounded: bool = True) -> None:
        """Negative and out-of-vocabulary values, and item ids item_info lacks;
        ``rows_of(bad_value_mask)`` maps values to rows. ``bounded=False``: negatives only.

        ``values`` is a flat array, one entry per scalar row or per list element; min/max first
        keeps the clean case to two reductions.
        """
        if len(values) == 0:
            return
        vocab = self._vocab(column) if bounded else None
        low, high = values.min(), values.max()
        if low < 0:
            bad_mask = values < 0
            first_value = values[np.argmax(bad_mask)]
            self.findings.add(column.name, "negative", rows_of(bad_mask), row_offset,
                              lambda _: f"value {first_value} is negative")
        if vocab is not None and high >= vocab:
            bad_mask = values >= vocab
            first_value = values[np.argmax(bad_mask)]
            self.findings.add(column.name, "vocab", rows_of(bad_mask), row_offset,
                              lambda _: self._range_message(column, first_value))
        missing = self.items.missing
        if bounded and missing is not None and column.name in (ITEM_ID, ITEM_SEQ):
            known = (values >= 0) & (values < len(missing))
            bad_mask = np.zeros(len(values), dtype=bool)
            bad_mask[known] = missing[values[known]]
            if bad_mask.any():
                first_value = values[np.argmax(bad_mask)]
                self.findings.add(column.name, "missing item", rows_of(bad_mask), row_offset,
                                  lambda _: f"item id {first_value} is not in item_info (its "
                                            f"item features would be all zeros)")

    # lists -----------------------------------------------------------------------------------

    def _list(self, column: Column, batch: _ListBatch, row_offset: int) -> None:
        add, name = self.findings.add, column.name
        add(name, "null", np.flatnonzero(batch.null_rows), row_offset, lambda _: "value is null")
        add(name, "null element", batch.rows_of(batch.null_values), row_offset,
            lambda _: "list holds a null element")
        ragged = np.flatnonzero((batch.lengths != column.length) & ~batch.null_rows)
        noun = "vector" if column.kind == "float_list" else "list"
        add(name, "length", ragged, row_offset,
            lambda row: f"{noun} has length {batch.lengths[row]}, expected {column.length}")

        if column.kind == "float_list":
            if not np.isfinite(batch.values).all():
                bad_mask = ~np.isfinite(batch.values)
                first_value = batch.values[np.argmax(bad_mask)]
                add(name, "finite", batch.rows_of(bad_mask), row_offset,
                    lambda _: f"vector holds {first_value}, expected finite floats")
        else:
            self._int_range(column, batch.values, row_offset, batch.rows_of)

        rows, mat = batch.matrix(column.length)
        if column.kind == "int_list":
            self._left_padding(name, rows, mat, row_offset)
        padding = self._padding_row(row_offset, len(batch.lengths))
        if self.table == ITEM_INFO and padding is not None and padding in rows:
            # The padding item: the model gathers it for every padded history slot.
            if np.any(mat[int(np.searchsorted(rows, padding))] != 0):
                add(name, "padding row", np.array([padding]), row_offset,
                    lambda _: "padding row 0 must be all zeros")

    def _left_padding(self, name: str, rows: np.ndarray, mat: np.ndarray, row_offset: int) -> None:
        """Rows of ``mat (k, L)`` where a 0 comes after a non-zero value (not left-padded).

        A row is left-padded iff its ``c`` non-zero values are exactly its last ``c`` positions,
        i.e. the first non-zero position is ``L - c``.
        """
        if mat.size == 0:
            return
        nonzero = mat != PADDING_ID
        count = nonzero.sum(axis=1)
        first_nonzero = nonzero.argmax(axis=1)
        bad = np.flatnonzero((count > 0) & (first_nonzero != mat.shape[1] - count))

        def describe(local):
            k = int(np.searchsorted(rows, local))
            row = nonzero[k]
            gap = first_nonzero[k] + int(np.argmin(row[first_nonzero[k]:]))
            return (f"not left-padded: padding {PADDING_ID} at position {gap} "
                    f"after a non-zero value at position {first_nonzero[k]}")

        self.findings.add(name, "left padding", rows[bad], row_offset, describe)
