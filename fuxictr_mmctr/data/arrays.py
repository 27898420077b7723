"""Parquet -> contiguous typed numpy arrays, read once and cached as ``.npy``.

A split is streamed in record batches of 64k rows, each converted and appended to its ``.npy``
file in a temporary cache folder that is renamed into place when complete. Reading the 3.6M-row
MicroLens train split thus never holds the int64 Arrow copy of ``item_seq`` (2.9 GB) nor the
converted arrays in memory (peak ~650 MB, most of it torch and Arrow). Later runs
``np.load(..., mmap_mode="r")`` the cache in well under a second.

Array layout (one row per parquet row):

==========================  ==========================  =========
column kind                 array                       dtype
==========================  ==========================  =========
``user_id``                 ``(N,)``                    int64
other ints (ids, levels)    ``(N,)``                    int32
int lists (``item_seq``)    ``(N, L)``                  int32
float lists (vectors)       ``(N, D)``                  float32
``label`` / float scalars   ``(N,)``                    float32
==========================  ==========================  =========

Cache folder: ``<parquet folder>/.cache/<file stem>-<size>-<mtime>-<key>/`` where ``key``
hashes the columns read and the id mapping, so a changed file or config never hits a stale
cache. When that cache root cannot be written (a read-only shared mount, a file named
``.cache``), the cache goes to ``$XDG_CACHE_HOME/fuxictr_mmctr/arrays/<root name>-<hash of its
path>/`` (``~/.cache`` when XDG_CACHE_HOME is unset), so two datasets never share one, and
one log line says where. When no cache folder can be written (or the disk fills up while
writing one), the split is read into memory without a cache, with one warning line. Temporary
cache folders (``.tmp-*``) left by a killed run are removed by the next run that caches into
the same root once they are stale (:func:`fuxictr_mmctr.fileio.remove_stale_temporaries`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.types as pat

from fuxictr_mmctr import fileio
from fuxictr_mmctr.data.schema import ITEM_ID, ITEM_SEQ, USER_ID, Column
from fuxictr_mmctr.errors import UserError, location

#: Rows per record batch while streaming a file (2**16 rows x 100 int64 = 52 MB).
BATCH_ROWS = 1 << 16
#: Parquet pages are read through a buffer of this size instead of whole column chunks at
#: once, which keeps Arrow's peak memory at ~170 MB on MicroLens train (750 MB without).
READ_BUFFER_BYTES = 1 << 22
CACHE_FOLDER = ".cache"
CACHE_VERSION = 1
#: Columns whose values are item ids, i.e. what an :class:`ItemIdRemap` applies to.
ITEM_ID_COLUMNS = (ITEM_ID, ITEM_SEQ)


def array_dtype(column: Column) -> np.dtype:
    """dtype the loader keeps for ``column`` (see the table in the module docstring)."""
    if column.kind in ("float_list", "label", "float"):
        return np.dtype(np.float32)
    return np.dtype(np.int64) if column.name == USER_ID else np.dtype(np.int32)


def array_shape(column: Column, num_rows: int) -> tuple[int, ...]:
    return (num_rows,) if column.length is None else (num_rows, column.length)


def read_columns(path, columns, remap=None, cache_dir=None, validate=None,
                 cache_tag: str | None = None) -> tuple[dict[str, np.ndarray], bool]:
    """Typed arrays of ``columns`` (schema :class:`Column`\\ s) of the parquet file ``path``.

    Args:
        remap: an :class:`~fuxictr_mmctr.data.id_remap.ItemIdRemap` applied to item id columns.
        cache_dir: cache root (default ``<folder>/.cache``); ``False`` reads without caching.
        validate: called with no arguments before a (non-cached) read; it raises
            :class:`UserError` on bad data.
        cache_tag: goes into the cache key, so arrays read under different ``validate``
            settings never stand in for each other (``None`` keeps the plain key).

    Returns ``(arrays, from_cache)``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"{path}: file not found")
    if not os.path.isfile(path):  # a folder, or a pipe that would block the read forever
        raise UserError(f"{path}: is not a regular file, expected a parquet file")
    candidates = []
    if cache_dir is not False:
        primary = _cache_folder(path, columns, remap, cache_dir, cache_tag)
        candidates = [primary, _fallback_cache_folder(primary)]
        for folder in candidates:
            cached = _load_cache(folder, columns)
            if cached is not None:
                return cached, True
    if validate is not None:
        validate()
    failures = []
    for folder in candidates:
        arrays, failure = _read_into_cache(path, columns, remap, folder)
        if arrays is not None:
            if failures:
                _report_fallback(failures[0], folder)
            return arrays, False
        failures.append(failure)
    if failures:
        _report_fallback(failures[0], None, failures[-1])
    return _read_parquet(path, columns, remap, out_dir=None), False


#: Cache failures already reported, so each unusable cache root gets one log line per process.
_REPORTED_FAILURES: set[str] = set()


def _fallback_cache_folder(cache_folder: str) -> str:
    """Where ``cache_folder`` goes when its root cannot be written: the user cache, under a
    name unique to that root's absolute path (two datasets never share a cache)."""
    root, name = os.path.split(cache_folder)
    # Named after the data folder (``<data>/.cache`` would give every dataset the same name).
    label = os.path.basename(os.path.dirname(root) if os.path.basename(root) == CACHE_FOLDER
                             else root)
    return os.path.join(fileio.user_cache_dir("arrays", fileio.folder_key(root, label)), name)


def _report_fallback(failure: str, used: str | None, last_failure: str | None = None) -> None:
    """One log line per cache root: where the cache went instead, or that there is none."""
    if failure in _REPORTED_FAILURES:
        return
    _REPORTED_FAILURES.add(failure)
    if used is not None:
        logging.warning("Array cache: %s; caching in %s instead", failure, os.path.dirname(used))
    else:
        logging.warning("Array cache: %s, and %s; reading without a cache (set XDG_CACHE_HOME "
                        "to a writable folder to cache)", failure, last_failure)


def _read_into_cache(path, columns, remap, cache_folder):
    """Read ``path`` into the ``.npy`` files of ``cache_folder`` and load them.

    The files are written in a temporary folder renamed into place when complete. Returns
    ``(arrays, None)``, or ``(None, reason)`` when the cache cannot be written there (a
    read-only or full disk, a quota, permissions, a file in the way), with the temporary
    folder removed.
    """
    root = os.path.dirname(cache_folder)
    reason = fileio.unwritable_reason(root)
    if reason is not None:
        return None, f"cannot write {root} ({reason})"
    try:
        os.makedirs(root, exist_ok=True)
        fileio.remove_stale_temporaries(root, folders=True)
        tmp_folder = tempfile.mkdtemp(prefix=fileio.TEMPORARY_PREFIX, dir=root)
        os.chmod(tmp_folder, 0o755)  # mkdtemp makes it private; the cache is shared data
    except OSError as error:
        return None, str(fileio.write_error(root, error))
    try:
        _read_parquet(path, columns, remap, out_dir=tmp_folder)
        meta = {"version": CACHE_VERSION, "source": path,
                "columns": [column.name for column in columns]}
        with open(os.path.join(tmp_folder, "meta.json"), "w", encoding="utf-8") as handle:
            json.dump(meta, handle)
        try:
            os.rename(tmp_folder, cache_folder)
        except OSError:  # another process finished first: use its copy
            shutil.rmtree(tmp_folder, ignore_errors=True)
    except CacheWriteError as error:  # a failed write of a cache file, whatever its message
        shutil.rmtree(tmp_folder, ignore_errors=True)
        return None, (f"cannot write {os.path.join(cache_folder, error.file_name)}: disk full "
                      f"or not writable ({error.reason})")
    except OSError as error:
        shutil.rmtree(tmp_folder, ignore_errors=True)
        if error.errno not in fileio.WRITE_ERRORS:
            raise
        return None, str(fileio.write_error(root, error))
    except BaseException:
        shutil.rmtree(tmp_folder, ignore_errors=True)
        raise
    arrays = _load_cache(cache_folder, columns)
    return arrays, None if arrays is not None else f"{cache_folder} is unreadable"


def _cache_folder(path, columns, remap, cache_dir, cache_tag=None) -> str:
    stat = os.stat(path)
    parts = [CACHE_VERSION, [(c.name, c.kind, c.length, c.vocab) for c in columns],
             remap.fingerprint() if remap is not None else None]
    if cache_tag is not None:  # appended only when set: existing cache keys stay valid
        parts.append(cache_tag)
    key = hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:10]
    root = cache_dir or os.path.join(os.path.dirname(os.path.abspath(path)), CACHE_FOLDER)
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.join(root, f"{stem}-{stat.st_size}-{stat.st_mtime_ns}-{key}")


def _load_cache(folder, columns):
    if not os.path.exists(os.path.join(folder, "meta.json")):
        return None
    try:
        return {column.name: np.load(os.path.join(folder, f"{column.name}.npy"), mmap_mode="r")
                for column in columns}
    except (OSError, ValueError):
        return None  # damaged cache: read the parquet again


def _read_parquet(path, columns, remap, out_dir):
    """Stream ``path`` batch by batch into arrays (or, with ``out_dir``, ``.npy`` files there).

    Returns ``{name: array}``; with ``out_dir`` the arrays are written and closed, and the
    caller loads them from the cache.
    """
    try:
        parquet = pq.ParquetFile(path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
    except (pa.ArrowException, OSError) as error:
        raise UserError(f"{path}: not a readable parquet file ({error})") from None
    names = parquet.schema_arrow.names
    for column in columns:
        if column.name not in names:
            raise UserError(f"{location(path, column.name)}: column is missing")
    num_rows = parquet.metadata.num_rows
    sinks = {column.name: _ArraySink(array_shape(column, num_rows), array_dtype(column),
                                     None if out_dir is None else
                                     os.path.join(out_dir, f"{column.name}.npy"))
             for column in columns}
    start = 0
    try:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS,
                                          columns=[column.name for column in columns]):
            for column in columns:
                column_remap = remap if column.name in ITEM_ID_COLUMNS else None
                sinks[column.name].write(start, convert_column(
                    batch.column(column.name), column, path, start, column_remap))
            start += batch.num_rows
    except pa.ArrowException as error:
        raise UserError(f"{location(path, None, start)}: cannot read the file from here on "
                        f"({error})") from None
    finally:
        _close_all(sinks.values())
    return {name: sink.array for name, sink in sinks.items()}


def _close_all(sinks) -> None:
    """Close every sink, then raise the first :class:`CacheWriteError` a close raised."""
    failure = None
    for sink in sinks:
        try:
            sink.close()
        except CacheWriteError as error:
            failure = failure or error
    if failure is not None:
        raise failure


class CacheWriteError(Exception):
    """Writing the cache file ``file_name`` failed (a full disk, a quota, a file-size limit):
    raised for any ``OSError`` of that write, ``ndarray.tofile``'s errno-less ``"N requested
    and M written"`` included."""

    def __init__(self, file_name: str, error: OSError):
        self.file_name = file_name
        self.reason = fileio.WRITE_ERRORS.get(error.errno) or str(error) or type(error).__name__
        super().__init__(f"{file_name}: {self.reason}")


class _ArraySink:
    """Rows arrive in order; keep them in memory, or append them to a ``.npy`` file.

    Appending (rather than writing through a memory map) keeps the written data out of the
    process's resident memory: loading MicroLens train peaks at a fraction of its 1.5 GB.
    Any failure to write the file is a :class:`CacheWriteError`.
    """

    def __init__(self, shape, dtype, path=None):
        self.shape, self.dtype = shape, dtype
        self.array = np.empty(shape, dtype) if path is None else None
        self.handle = None
        self.path = path
        if path is not None:
            with self._writing():
                self.handle = open(path, "wb")
                np.lib.format.write_array_header_2_0(self.handle, {
                    "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                    "shape": shape})

    def write(self, start, values):
        if self.handle is None:
            self.array[start:start + len(values)] = values
        else:
            with self._writing():
                np.ascontiguousarray(values, dtype=self.dtype).tofile(self.handle)

    def close(self):
        if self.handle is not None:
            handle, self.handle = self.handle, None
            with self._writing():
                handle.close()

    @contextlib.contextmanager
    def _writing(self):
        try:
            yield
        except OSError as error:
            raise CacheWriteError(os.path.basename(self.path), error) from None


def convert_column(values: pa.Array, column: Column, path, row_offset: int = 0,
                   remap=None) -> np.ndarray:
    """One record-batch column -> typed array, with the cheap checks that need no extra pass.

    Raises :class:`UserError` (file, column, row) on nulls, ragged lists, ids outside
    ``[0, column.vocab)``, and NaN/inf floats.
    """
    where = lambda row: location(path, column.name, row_offset + int(row))  # noqa: E731
    if values.null_count:
        raise UserError(f"{where(_first(np.asarray(values.is_null())))}: missing value")
    if column.length is None:
        flat, num_rows = values, len(values)
    else:
        flat, num_rows = _list_values(values, column, where)
    if remap is not None:
        numbers = remap.apply(flat, path, column.name, row_offset, column.length or 1)
    elif column.kind in ("float_list", "label", "float"):
        if not pat.is_integer(flat.type) and not pat.is_floating(flat.type):
            raise UserError(f"{location(path, column.name)}: dtype is {values.type}, expected numbers")
        numbers = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        bad = ~np.isfinite(numbers)
        if bad.any():
            raise UserError(f"{where(_first(bad) // max(column.length or 1, 1))}: "
                            f"NaN or infinite value")
    else:
        if not pat.is_integer(flat.type):
            raise UserError(f"{location(path, column.name)}: dtype is {values.type}, expected "
                            f"integers")
        numbers = flat.to_numpy(zero_copy_only=False)
        _check_range(numbers, column, where)
    return numbers.reshape(array_shape(column, num_rows))


def _list_values(values, column, where):
    """Flat values of a fixed-length list column, after checking every row has the length."""
    if not (pat.is_list(values.type) or pat.is_large_list(values.type)
            or pat.is_fixed_size_list(values.type)):
        raise UserError(f"{where(0)}: dtype is {values.type}, expected a list of length "
                        f"{column.length}")
    if pat.is_fixed_size_list(values.type):
        lengths = np.full(len(values), values.type.list_size)
    else:
        offsets = values.offsets.to_numpy()
        lengths = np.diff(offsets)
    ragged = lengths != column.length
    if ragged.any():
        row = _first(ragged)
        raise UserError(f"{where(row)}: list has length {lengths[row]}, expected {column.length}")
    flat = values.flatten()
    if flat.null_count:
        row = _first(np.asarray(flat.is_null())) // column.length
        raise UserError(f"{where(row)}: missing value inside the list")
    return flat, len(values)


def _check_range(numbers, column, where):
    if numbers.size == 0:
        return
    low, high = numbers.min(), numbers.max()
    bound = column.vocab
    if low < 0 or (bound is not None and high >= bound):
        bad = (numbers < 0) if bound is None else ((numbers < 0) | (numbers >= bound))
        flat_index = _first(bad)
        row = flat_index // (column.length or 1)
        limit = f"[0, {bound})" if bound is not None else ">= 0"
        raise UserError(f"{where(row)}: value {numbers.reshape(-1)[flat_index]} is out of range "
                        f"{limit}")


def _first(mask) -> int:
    return int(np.flatnonzero(np.asarray(mask).reshape(-1))[0])
