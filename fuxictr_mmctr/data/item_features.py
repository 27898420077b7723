"""Enrich item_info with per-item features of the raw item file (``fuxictr-mmctr items``).

The WWW 2025 MMCTR challenge ships, beside the dataset's ``item_info.parquet``, a raw item file
(``item_feature.parquet``: one row per real item with its title, tags, per-item likes and views
levels and, where present, 768-d BERT text and 1024-d CLIP image vectors). :func:`build_item_table`
writes an enriched item table: every column of item_info, in item_info's row order (row 0, the
padding item, stays zeros), plus

* ``item_likes_level``, ``item_views_level`` (int64, 0..10): the raw file's ``likes_level`` /
  ``views_level`` of the item on that row;
* optionally ``item_emb_pca<dim>`` (list<float32> of ``dim``): the raw text and/or image
  vectors, concatenated in that order and reduced by PCA to ``dim`` values, as the challenge's
  Task 1 baseline made ``item_emb_d128`` (PCA fitted on every item; ``whiten`` scales each
  component to unit variance).

The PCA is deterministic: the covariance is accumulated in float64 over fixed blocks of rows,
decomposed with ``numpy.linalg.eigh``, and each component's sign is fixed so that its entry of
largest magnitude is positive; the same inputs give the same bytes. Raw vectors are read
one column and one row group at a time into one float32 matrix ``(items, features)``: on the
challenge's 91,717 items with both modalities that matrix is 657 MB, and the rest is one row
group of one column (the whole column if the file has a single row group) and small blocks.

The output records where it came from (schema metadata :data:`PROVENANCE_KEY`: the size and
modification time of both sources, and the options), so :func:`is_current` tells whether a
table must be built again. Bad input is one :class:`~fuxictr_mmctr.errors.UserError` line
naming file, column and row; the output is written atomically, so a failed build leaves no
half-written file.

Example::

    build_item_table("raw/item_feature.parquet", "data/X/item_info.parquet",
                     "data/X/item_info_levels.parquet",
                     vectors=VectorOptions(("text", "image"), dim=128))
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyarrow.types as pat

from fuxictr_mmctr.data.arrays import convert_column
from fuxictr_mmctr.data.schema import (ITEM_ID, LEVEL_VOCAB, LIKES_LEVEL, VIEWS_LEVEL, Column,
                                        list_column)
from fuxictr_mmctr.data.synthetic import IMAGE_EMB, IMAGE_EMB_DIM, TEXT_EMB, TEXT_EMB_DIM
from fuxictr_mmctr.errors import UserError, location
from fuxictr_mmctr.fileio import atomic_path

#: Output columns: the per-item levels, named apart from the per-row levels of the splits.
ITEM_LIKES_LEVEL = "item_likes_level"
ITEM_VIEWS_LEVEL = "item_views_level"
#: Raw level column -> output column.
LEVEL_COLUMNS = {LIKES_LEVEL: ITEM_LIKES_LEVEL, VIEWS_LEVEL: ITEM_VIEWS_LEVEL}
#: Modality name -> (raw vector column, its width). Concatenated in this order.
MODALITIES = {"text": (TEXT_EMB, TEXT_EMB_DIM), "image": (IMAGE_EMB, IMAGE_EMB_DIM)}
#: Output dimension of the PCA vectors by default (the width of ``item_emb_d128``).
DEFAULT_DIM = 128
#: File name the dataset configs use for the enriched table of a dataset folder.
LEVELS_ITEM_INFO = "item_info_levels.parquet"
#: Schema-metadata key of the provenance record.
PROVENANCE_KEY = b"fuxictr_mmctr.item_table"
#: Bumped when the builder's output changes for the same inputs: older tables are stale.
BUILDER_VERSION = 1
#: Rows per block of the covariance accumulation (fixed, so the sums are reproducible).
COVARIANCE_BLOCK = 8192


@dataclass(frozen=True)
class VectorOptions:
    """What PCA vectors to build: ``modalities`` (``"text"``, ``"image"``, in any subset,
    concatenated in :data:`MODALITIES` order), output ``dim`` and ``whiten``."""

    modalities: tuple[str, ...] = ("text", "image")
    dim: int = DEFAULT_DIM
    whiten: bool = False

    def __post_init__(self):
        unknown = [name for name in self.modalities if name not in MODALITIES]
        if unknown or not self.modalities:
            raise UserError(f"items: unknown modality {unknown[0] if unknown else '(none)'!r}; "
                            f"choose from {', '.join(MODALITIES)}")
        ordered = tuple(name for name in MODALITIES if name in self.modalities)
        object.__setattr__(self, "modalities", ordered)
        if isinstance(self.dim, bool) or not isinstance(self.dim, (int, np.integer)) \
                or self.dim < 1:
            raise UserError(f"items: --dim must be a positive integer, got {self.dim!r}")
        object.__setattr__(self, "dim", int(self.dim))
        object.__setattr__(self, "whiten", bool(self.whiten))

    @property
    def column(self) -> str:
        """Name of the output vector column, ``item_emb_pca<dim>``."""
        return f"item_emb_pca{self.dim}"

    @property
    def raw_columns(self) -> tuple[tuple[str, int], ...]:
        """``(raw column, width)`` of each modality, in concatenation order."""
        return tuple(MODALITIES[name] for name in self.modalities)


@dataclass(frozen=True)
class Pca:
    """A fitted PCA: ``mean (F,) float64``, ``components (F, k) float64`` (unit columns),
    ``variance (k,)`` (of each component over the fitted rows) and ``total_variance``."""

    mean: np.ndarray
    components: np.ndarray
    variance: np.ndarray
    total_variance: float

    def transform(self, features: np.ndarray, whiten: bool = False) -> np.ndarray:
        """``features (n, F)`` -> ``(n, k) float32``; ``whiten`` divides by each component's
        standard deviation. Computed in float64 blocks of :data:`COVARIANCE_BLOCK` rows."""
        scale = np.ones_like(self.variance)
        if whiten:
            scale = 1.0 / np.sqrt(np.maximum(self.variance, np.finfo(np.float64).tiny))
        projected = np.empty((len(features), self.components.shape[1]), dtype=np.float32)
        for start in range(0, len(features), COVARIANCE_BLOCK):
            block = features[start:start + COVARIANCE_BLOCK].astype(np.float64)
            block -= self.mean
            projected[start:start + COVARIANCE_BLOCK] = (block @ self.components) * scale
        return projected

    @property
    def explained_share(self) -> float:
        """Share of the total variance the kept components hold, in [0, 1]."""
        return float(self.variance.sum() / self.total_variance) if self.total_variance else 0.0


# ---------------------------------------------------------------------------------- build


def build_item_table(item_feature, item_info, out, vectors: VectorOptions | None = None,
                     vectors_file=None, say=print) -> dict:
    """Write the enriched item table to ``out`` (see the module docstring); return a summary
    ``{"rows", "items", "columns", "seconds"[, "explained_variance"]}``.

    ``item_feature``: the raw item file; ``item_info``: the dataset's item table (its rows,
    row order and columns are kept); ``vectors``: PCA vectors to add, or ``None``;
    ``vectors_file``: a parquet file with ``item_id`` and the raw vector columns, when they
    are not in ``item_feature``.
    """
    started = time.perf_counter()
    item_feature, item_info, out = os.fspath(item_feature), os.fspath(item_info), os.fspath(out)
    vectors_file = None if vectors_file is None else os.fspath(vectors_file)
    _check_out_path(out, *[path for path in (item_feature, item_info, vectors_file) if path])
    raw = open_parquet(item_feature)
    try:
        require_columns(raw, item_feature, [ITEM_ID, *LEVEL_COLUMNS] + (
            _vector_names(vectors) if vectors_file is None else []))
        info_table = read_item_info(item_info)
        raw_rows = match_items(info_table.column(ITEM_ID), read_ids(raw, item_feature),
                               item_info, item_feature)
        new_columns = level_columns(raw, item_feature, raw_rows)
    finally:
        raw.close()
    summary = {"rows": len(raw_rows), "items": int((raw_rows >= 0).sum())}
    if vectors is not None:
        vector_path = vectors_file or item_feature
        vector_rows = raw_rows if vectors_file is None else vector_file_rows(
            vectors_file, vectors, info_table.column(ITEM_ID), item_info)
        new_columns[vectors.column], share = vector_column(vector_path, vector_rows, vectors)
        summary["explained_variance"] = round(share, 6)
    provenance = provenance_record(item_feature, item_info, vectors, list(new_columns),
                                   vectors_file=vectors_file)
    write_table(with_columns(info_table, new_columns), out, provenance)
    summary["columns"] = list(new_columns)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    say(_summary_line(out, summary, vectors))
    return summary


def _vector_names(vectors: VectorOptions | None) -> list[str]:
    return [name for name, _ in vectors.raw_columns] if vectors is not None else []


def level_columns(raw: pq.ParquetFile, path: str, raw_rows: np.ndarray) -> dict:
    """``{item_likes_level, item_views_level}``: the raw levels in item_info row order,
    ``(n_info,) int64`` arrow arrays with 0 on padding rows."""
    return {out_name: pa.array(scatter_to_rows(read_levels(raw, path, raw_name), raw_rows))
            for raw_name, out_name in LEVEL_COLUMNS.items()}


def vector_file_rows(path: str, vectors: VectorOptions, info_ids, info_path: str) -> np.ndarray:
    """Rows of a separate vectors file for each item_info row (see :func:`match_items`)."""
    parquet = open_parquet(path)
    try:
        require_columns(parquet, path, [ITEM_ID, *_vector_names(vectors)])
        return match_items(info_ids, read_ids(parquet, path), info_path, path)
    finally:
        parquet.close()


def vector_column(path: str, rows: np.ndarray, vectors: VectorOptions):
    """The PCA vectors of ``path`` in item_info row order: ``(list<float32> column of
    (n_info, dim), share of the variance kept)``; ``rows`` maps item_info rows to file rows."""
    parquet = open_parquet(path)
    num_rows = parquet.metadata.num_rows
    parquet.close()
    pca, projected = pca_vectors(path, num_rows, vectors)
    return list_column(scatter_to_rows(projected, rows)), pca.explained_share


def _summary_line(out: str, summary: dict, vectors: VectorOptions | None) -> str:
    line = (f"items: wrote {out} ({summary['rows']:,} rows, {summary['items']:,} items; "
            f"added {', '.join(summary['columns'])})")
    if vectors is not None:
        line += (f"; {vectors.column} from {'+'.join(vectors.modalities)} keeps "
                 f"{100 * summary['explained_variance']:.1f}% of the variance"
                 f"{', whitened' if vectors.whiten else ''}")
    return f"{line}; {summary['seconds']} s"


def _check_out_path(out: str, *inputs: str) -> None:
    """``out`` must be a parquet file path distinct from the inputs (never overwrite them)."""
    if not out.strip():
        raise UserError("items: --out is an empty path; give the output parquet file")
    for source in inputs:
        if os.path.abspath(out) == os.path.abspath(source):
            raise UserError(f"items: --out {out} is one of the input files; write the enriched "
                            f"table to another file")
    if os.path.isdir(out):
        raise UserError(f"{out}: is a folder; --out takes the output parquet file")


# ---------------------------------------------------------------------------------- reading


def open_parquet(path: str) -> pq.ParquetFile:
    """The parquet file at ``path``; a missing or unreadable file is one error line."""
    if not os.path.exists(path):
        raise UserError(f"{path}: file not found")
    if not os.path.isfile(path):
        raise UserError(f"{path}: is not a regular file, expected a parquet file")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable parquet file ({_one_line(error)})") from None


def require_columns(parquet: pq.ParquetFile, path: str, names) -> None:
    """Every column of ``names`` is in ``parquet`` exactly once."""
    file_schema = parquet.schema_arrow
    for name in names:
        copies = len(file_schema.get_all_field_indices(name))
        if copies == 0:
            raise UserError(f"{location(path, name)}: column is missing")
        if copies > 1:
            raise UserError(f"{location(path, name)}: column appears {copies} times")


def read_item_info(path: str) -> pa.Table:
    """The whole item_info table (it is small: ids, tags and 128-d vectors)."""
    parquet = open_parquet(path)
    try:
        require_columns(parquet, path, [ITEM_ID])
        return parquet.read()
    except (pa.ArrowException, OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read ({_one_line(error)})") from None
    finally:
        parquet.close()


def read_ids(parquet: pq.ParquetFile, path: str) -> pa.Array:
    """The raw file's ``item_id`` column ``(n,)``."""
    try:
        return parquet.read(columns=[ITEM_ID]).column(ITEM_ID).combine_chunks()
    except (pa.ArrowException, OSError, ValueError) as error:
        raise UserError(f"{location(path, ITEM_ID)}: cannot read ({_one_line(error)})") from None


def read_levels(parquet: pq.ParquetFile, path: str, name: str) -> np.ndarray:
    """A level column of the raw file as ``(n,) int64`` in 0..LEVEL_VOCAB-1 (nulls, floats and
    values out of range are errors naming the row)."""
    column = parquet.read(columns=[name]).column(name).combine_chunks()
    return convert_column(column, Column(name, "int", vocab=LEVEL_VOCAB), path).astype(np.int64)


def read_vectors(path: str, name: str, width: int, out: np.ndarray) -> None:
    """Read the list column ``name`` into ``out (n, width) float32``, one row group at a time.

    Nulls, a length other than ``width``, a non-numeric dtype and NaN/inf are errors naming
    the row. Besides ``out`` it holds one row group of the column: pyarrow's ``iter_batches``
    keeps every decoded batch of a list column until its file is closed (the whole column),
    ``read_row_group`` on a file of its own does not.
    """
    spec = Column(name, "float_list", length=width)
    start = 0
    parquet = open_parquet(path)
    try:
        for group in range(parquet.metadata.num_row_groups):
            for chunk in parquet.read_row_group(group, columns=[name]).column(0).chunks:
                values = convert_column(chunk, spec, path, row_offset=start)
                out[start:start + len(values)] = values
                start += len(values)
    except (pa.ArrowException, OSError) as error:
        raise UserError(f"{location(path, name, start)}: cannot read "
                        f"({_one_line(error)})") from None
    finally:
        parquet.close()


# ---------------------------------------------------------------------------------- matching


def match_items(info_ids, raw_ids, info_path: str, raw_path: str) -> np.ndarray:
    """For each item_info row, the raw-file row of its item: ``(n_info,) int64``, -1 on
    padding rows (id 0, null or ``""``).

    Both files must hold the same real items: an item of either file missing from the other,
    a repeated id, a padding id in the raw file or ids of different kinds (strings in one,
    integers in the other) are errors naming file, column and row.
    """
    info_ids, raw_ids = _comparable_ids(info_ids, raw_ids, info_path, raw_path)
    _check_raw_ids(raw_ids, raw_path)
    info_padding = _is_padding(info_ids)
    _check_unique(info_ids.filter(pa.array(~info_padding)), info_path,
                  np.flatnonzero(~info_padding))
    position = pc.index_in(info_ids, value_set=raw_ids)
    raw_rows = position.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    raw_rows[info_padding] = -1
    missing = np.flatnonzero((raw_rows < 0) & ~info_padding)
    if len(missing):
        raise UserError(_mismatch(info_path, missing, info_ids, raw_path))
    found = np.zeros(len(raw_ids), dtype=bool)
    found[raw_rows[raw_rows >= 0]] = True
    extra = np.flatnonzero(~found)
    if len(extra):
        raise UserError(_mismatch(raw_path, extra, raw_ids, info_path))
    return raw_rows


def _comparable_ids(info_ids, raw_ids, info_path: str, raw_path: str):
    """Both id columns as one type: int64 for integers, string for strings."""
    info_ids = _as_array(info_ids)
    raw_ids = _as_array(raw_ids)
    kinds = {path: _id_kind(ids.type, path) for path, ids in ((info_path, info_ids),
                                                              (raw_path, raw_ids))}
    if kinds[info_path] != kinds[raw_path]:
        raise UserError(f"{location(raw_path, ITEM_ID)}: item ids are {kinds[raw_path]} but "
                        f"those of {info_path} are {kinds[info_path]}")
    target = pa.int64() if kinds[info_path] == "integers" else pa.string()
    return info_ids.cast(target), raw_ids.cast(target)


def _as_array(ids) -> pa.Array:
    if isinstance(ids, pa.ChunkedArray):
        return ids.combine_chunks()
    return ids if isinstance(ids, pa.Array) else pa.array(ids)


def _id_kind(arrow_type, path: str) -> str:
    if pat.is_integer(arrow_type):
        return "integers"
    if pat.is_string(arrow_type) or pat.is_large_string(arrow_type):
        return "strings"
    raise UserError(f"{location(path, ITEM_ID)}: dtype is {arrow_type}, expected integer or "
                    f"string item ids")


def _is_padding(ids: pa.Array) -> np.ndarray:
    """``(n,) bool``: null, 0 (integers) or ``""`` (strings)."""
    padding = pa.scalar(0 if pat.is_integer(ids.type) else "", ids.type)
    return np.asarray(pc.fill_null(pc.equal(ids, padding), True).to_numpy(zero_copy_only=False))


def _check_raw_ids(raw_ids: pa.Array, raw_path: str) -> None:
    """One row per real item: no padding id, no repeated id."""
    padding = np.flatnonzero(_is_padding(raw_ids))
    if len(padding):
        row = int(padding[0])
        shown = raw_ids[row].as_py()
        raise UserError(f"{location(raw_path, ITEM_ID, row)}: item id {shown!r} is padding; the "
                        f"raw item file has one row per real item")
    _check_unique(raw_ids, raw_path, np.arange(len(raw_ids)))


def _check_unique(ids: pa.Array, path: str, file_rows: np.ndarray) -> None:
    """No id of ``ids`` twice; ``file_rows[i]`` is the file row of ``ids[i]`` (for the error,
    which names the second occurrence)."""
    if len(pc.unique(ids)) == len(ids):
        return
    first = pc.index_in(ids, value_set=ids).to_numpy(zero_copy_only=False)
    repeat = int(np.flatnonzero(first != np.arange(len(ids)))[0])
    raise UserError(f"{location(path, ITEM_ID, int(file_rows[repeat]))}: item id "
                    f"{ids[repeat].as_py()!r} appears more than once")


def _mismatch(path: str, rows: np.ndarray, ids: pa.Array, other: str) -> str:
    row = int(rows[0])
    more = f" (and {len(rows) - 1} more)" if len(rows) > 1 else ""
    return (f"{location(path, ITEM_ID, row)}: item id {ids[row].as_py()!r} is not in "
            f"{other}{more}; both files must hold the same items")


def scatter_to_rows(values: np.ndarray, raw_rows: np.ndarray) -> np.ndarray:
    """Raw-file-ordered ``values (n_raw, ...)`` -> item_info order ``(n_info, ...)``; rows
    with ``raw_rows == -1`` (padding) are zeros."""
    out = np.zeros((len(raw_rows),) + values.shape[1:], dtype=values.dtype)
    real = raw_rows >= 0
    out[real] = values[raw_rows[real]]
    return out


# ---------------------------------------------------------------------------------- PCA


def pca_vectors(path: str, rows: int, vectors: VectorOptions):
    """Read the chosen modalities of the ``rows`` items of ``path`` into one ``(rows, F)
    float32`` matrix, fit a PCA on all rows and project: returns ``(pca, (rows, dim) float32)``
    in file row order."""
    widths = [width for _, width in vectors.raw_columns]
    limit = min(rows - 1, sum(widths))
    if vectors.dim > limit:
        raise UserError(f"{path}: --dim {vectors.dim} is more than {rows:,} items and "
                        f"{sum(widths)} features allow (at most {limit})")
    features = np.empty((rows, sum(widths)), dtype=np.float32)
    offset = 0
    for name, width in vectors.raw_columns:
        read_vectors(path, name, width, features[:, offset:offset + width])
        offset += width
    pca = fit_pca(features, vectors.dim)
    projected = pca.transform(features, whiten=vectors.whiten)
    return pca, projected


def fit_pca(features: np.ndarray, dim: int) -> Pca:
    """Principal components of ``features (n, F)``: the top ``dim`` eigenvectors of the
    covariance, each signed so that its largest-magnitude entry is positive."""
    mean = features.mean(axis=0, dtype=np.float64)
    covariance = np.zeros((features.shape[1],) * 2, dtype=np.float64)
    for start in range(0, len(features), COVARIANCE_BLOCK):
        block = features[start:start + COVARIANCE_BLOCK].astype(np.float64)
        block -= mean
        covariance += block.T @ block
    covariance /= max(len(features) - 1, 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1][:dim]
    components = eigenvectors[:, order]
    largest = np.abs(components).argmax(axis=0)
    components *= np.sign(components[largest, np.arange(dim)])
    variance = np.maximum(eigenvalues[order], 0.0)
    return Pca(mean, components, variance, float(np.trace(covariance)))


# ---------------------------------------------------------------------------------- writing


def with_columns(table: pa.Table, columns: dict) -> pa.Table:
    """``table`` with ``columns`` appended (a column of the same name is replaced) and its
    pandas metadata dropped (it would list the old columns)."""
    for name, values in columns.items():
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, values)
    metadata = {key: value for key, value in (table.schema.metadata or {}).items()
                if key != b"pandas"}
    return table.replace_schema_metadata(metadata)


def write_table(table: pa.Table, out: str, provenance: dict) -> None:
    """Write ``table`` atomically with ``provenance`` in its schema metadata."""
    metadata = dict(table.schema.metadata or {})
    metadata[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True).encode("utf-8")
    with atomic_path(out) as tmp_path:
        pq.write_table(table.replace_schema_metadata(metadata), tmp_path)


# ---------------------------------------------------------------------------------- provenance


def provenance_record(item_feature: str, item_info: str, vectors: VectorOptions | None,
                      columns=None, vectors_file: str | None = None) -> dict:
    """What a table is built from: each source's file name, size and mtime, and the options."""
    sources = {"item_feature": file_stamp(item_feature), "item_info": file_stamp(item_info)}
    if vectors_file is not None:
        sources["vectors_file"] = file_stamp(vectors_file)
    return {"builder_version": BUILDER_VERSION,
            "sources": sources,
            "vectors": None if vectors is None else asdict(vectors) | {
                "modalities": list(vectors.modalities)},
            **({"columns": list(columns)} if columns is not None else {})}


def file_stamp(path: str) -> dict:
    """``{"name", "size", "mtime_ns"}`` of a file (``None`` values when it is missing)."""
    try:
        stat = os.stat(path)
    except OSError:
        return {"name": os.path.basename(path), "size": None, "mtime_ns": None}
    return {"name": os.path.basename(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def saved_provenance(out: str) -> dict | None:
    """The provenance record of a built table; ``None`` when missing or unreadable."""
    try:
        metadata = pq.read_schema(out).metadata or {}
        return json.loads(metadata[PROVENANCE_KEY])
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return None


def is_current(out, item_feature, item_info, vectors: VectorOptions | None = None,
               vectors_file=None) -> bool:
    """Whether ``out`` exists and was built from the sources as they are now (same size and
    mtime), with these options, by this builder version.

    A source that no longer exists is not compared (the raw item file, several GB on the real
    data, may be removed once the table is built); one that exists must match.
    """
    saved = saved_provenance(os.fspath(out))
    if saved is None:
        return False
    saved.pop("columns", None)
    vectors_file = None if vectors_file is None else os.fspath(vectors_file)
    wanted = provenance_record(os.fspath(item_feature), os.fspath(item_info), vectors,
                               vectors_file=vectors_file)
    paths = {"item_feature": item_feature, "item_info": item_info, "vectors_file": vectors_file}
    for role in list(wanted["sources"]):
        if not os.path.exists(paths[role]):
            saved.get("sources", {}).pop(role, None)
            wanted["sources"].pop(role)
    return saved == wanted


def items_command(item_feature, item_info, out, vectors: VectorOptions | None = None,
                  vectors_file=None) -> str:
    """The ``fuxictr-mmctr items`` command line that builds ``out`` (for error messages)."""
    line = f"fuxictr-mmctr items --item-feature {item_feature} --item-info {item_info} --out {out}"
    if vectors is not None:
        line += f" --vectors {','.join(vectors.modalities)} --dim {vectors.dim}"
        line += " --whiten" if vectors.whiten else ""
        line += f" --vectors-file {vectors_file}" if vectors_file else ""
    return line


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__
