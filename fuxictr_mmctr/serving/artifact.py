"""An artifact folder: written atomically, loaded with its signature, scored.

Layout (docs/serving.md)::

    ARTIFACT/
      signature.json       inputs, outputs, dynamic dims, provenance, parity results
      model.pt2            pt2 / aoti format  (or model.onnx + model.onnx.data)
      item_ids.parquet     only when the catalogue maps its own item ids to rows

A folder is written under a temporary name beside its destination and renamed into place only
when complete (:func:`artifact_folder`), so a reader never sees half an artifact and a failed
export leaves the previous one as it was.

:class:`Artifact` loads a folder with nothing but the package's serving modules and scores id
arrays: ``artifact.logits(columns)`` for a batch (one graph call per history-length group),
:meth:`Artifact.score_split` for a whole parquet split in batches.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import numpy as np
import torch

from fuxictr_mmctr import fileio
from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.serving import optional
from fuxictr_mmctr.serving.signature import SIGNATURE_FILE, Signature

#: File holding a catalogue's own item ids: row ``r`` of the item table is ``item_id[r - 1]``.
ID_MAP_FILE = "item_ids.parquet"
#: Batches of fewer rows are scored in one graph call, not in history-length groups
#: (benchmarks/results/serving.md: at 64 rows the extra calls cost more than the padding).
MIN_ROWS_TO_GROUP = 256


# ---------------------------------------------------------------------------- writing
def check_artifact_out(out: str) -> str:
    """``--out`` must be a new folder, an empty one, or an artifact folder (which is replaced);
    its parent must be writable. Returns the absolute path. Checked before any work."""
    if not out or not out.strip():
        raise UserError("--out is an empty path; give the artifact folder")
    path = os.path.abspath(out)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--out {out}: is a file; give a folder for the artifact")
    if os.path.isdir(path):
        entries = [name for name in os.listdir(path) if not name.startswith(".")]
        if entries and SIGNATURE_FILE not in entries:
            raise UserError(f"--out {out}: holds other files ({entries[0]}, ...) and is not an "
                            f"artifact folder; give a new or empty folder")
    reason = fileio.unwritable_reason(os.path.dirname(path))
    if reason is not None:
        raise UserError(f"--out {out}: cannot write there ({reason})")
    return path


@contextlib.contextmanager
def artifact_folder(out: str):
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` in one rename
    (an earlier artifact there is removed after the swap), on failure it is removed."""
    path = os.path.abspath(out)
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        fileio.remove_stale_temporaries(parent, folders=True)
        tmp = tempfile.mkdtemp(prefix=fileio.TEMPORARY_PREFIX, suffix=os.path.basename(path),
                               dir=parent)
    except OSError as error:
        raise fileio.write_error(path, error) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=fileio.TEMPORARY_PREFIX, suffix="old", dir=parent)
            os.rmdir(old)
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise fileio.write_error(path, error) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_id_map(remap, folder) -> str | None:
    """Write a catalogue's item-id mapping (sorted raw ids) to ``folder``; ``None`` without one."""
    if remap is None:
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({contract.ITEM_ID: remap.keys}), os.path.join(folder, ID_MAP_FILE))
    return ID_MAP_FILE


# ---------------------------------------------------------------------------- item ids
class ItemIds:
    """Raw item ids -> item-table rows, as the trained catalogue decided.

    Without a mapping, ids are rows already: ``0 <= id < vocab_size`` (0 is padding). With
    one (``item_ids.parquet``), raw ids (strings or large integers) map to rows ``1..N`` and
    the padding value (``0``/``""``/``null``) to 0.
    """

    def __init__(self, vocab_size: int, keys=None):
        self.vocab_size = int(vocab_size)
        self.keys = keys
        self.is_string = False
        self._rows = None
        if keys is not None:
            import pyarrow.types as pat

            self.is_string = pat.is_string(keys.type) or pat.is_large_string(keys.type)
            self._rows = {key: row for row, key in enumerate(keys.to_pylist(), start=1)}

    @classmethod
    def read(cls, folder, signature: Signature) -> "ItemIds":
        if not signature.id_map:
            return cls(signature.item_vocab)
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = os.path.join(folder, signature.id_map)
        try:
            keys = pq.read_table(path, columns=[contract.ITEM_ID]).column(contract.ITEM_ID)
        except (pa.ArrowException, OSError, KeyError) as error:
            raise UserError(f"{path}: cannot read the artifact's item ids ({error})") from None
        return cls(signature.item_vocab, keys.combine_chunks())

    @property
    def remap(self):
        """An :class:`~fuxictr_mmctr.data.id_remap.ItemIdRemap` for parquet reads, or ``None``."""
        if self.keys is None:
            return None
        from fuxictr_mmctr.data.id_remap import ItemIdRemap

        return ItemIdRemap(self.keys, source="the artifact's item ids")

    @property
    def num_rows(self) -> int:
        """Rows of the item table an id may address."""
        return self.vocab_size if self.keys is None else len(self._rows) + 1

    def is_padding(self, value) -> bool:
        """Whether ``value`` is the padding id (``0``; ``""``/``None`` for a mapped catalogue)."""
        if isinstance(value, bool):
            return False
        if self.keys is None:
            return isinstance(value, int) and value == contract.PADDING_ID
        if self.is_string:
            return value is None or value == ""
        return value is None or (isinstance(value, int) and value == contract.PADDING_ID)

    def row(self, value) -> int | None:
        """The row of one raw id (``None``: unknown, or of the wrong type)."""
        if self._rows is None:
            if isinstance(value, bool) or not isinstance(value, int):
                return None
            return value if 0 <= value < self.vocab_size else None
        if self.is_padding(value):
            return contract.PADDING_ID
        if self.is_string != isinstance(value, str) or isinstance(value, bool):
            return None
        return self._rows.get(value)


# ---------------------------------------------------------------------------- runners
class _Pt2Runner:
    """A ``torch.export`` program: ``module()(*tensors) -> (probability, logit)``."""

    def __init__(self, path: str):
        self.module = torch.export.load(path).module()

    def __call__(self, arrays):
        with torch.inference_mode():
            _, logit = self.module(*[torch.from_numpy(array) for array in arrays])
        return logit.numpy()


class _AotiRunner(_Pt2Runner):
    """An AOTInductor package: compiled code with the same call."""

    def __init__(self, path: str):
        from torch._inductor import aoti_load_package

        self.module = aoti_load_package(path)


class _OnnxRunner:
    """An ONNX Runtime session on the CPU."""

    def __init__(self, path: str, input_names, threads: int | None = None):
        ort = optional.require("onnxruntime", "scoring an ONNX artifact")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = list(input_names)

    def __call__(self, arrays):
        feed = dict(zip(self.input_names, arrays))
        return self.session.run(["logit"], feed)[0]


def _runner(folder: str, signature: Signature, threads: int | None):
    graph_file = os.path.join(folder, signature.files[0]) if signature.files else ""
    for name in signature.files:
        if not os.path.isfile(os.path.join(folder, name)):
            raise UserError(f"{folder}: artifact file {name} is missing")
    try:
        if signature.format == "pt2":
            return _Pt2Runner(graph_file)
        if signature.format == "aoti":
            return _AotiRunner(graph_file)
        if signature.format == "onnx":
            return _OnnxRunner(graph_file, signature.input_names, threads)
    except UserError:
        raise
    except Exception as error:  # torch and onnxruntime raise many types for foreign files
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{graph_file}: cannot load the {signature.format} graph "
                        f"({type(error).__name__}: {first})") from None
    raise UserError(f"{folder}/{SIGNATURE_FILE}: unknown format {signature.format!r} "
                    f"(pt2, onnx or aoti)")


# ---------------------------------------------------------------------------- the artifact
class Artifact:
    """A loaded artifact folder.

    Attributes:
        folder: where it lives.
        signature: its :class:`~fuxictr_mmctr.serving.signature.Signature`.
        item_ids: raw item id -> row (:class:`ItemIds`).
    """

    def __init__(self, folder: str, signature: Signature, runner, item_ids: ItemIds):
        self.folder = folder
        self.signature = signature
        self.item_ids = item_ids
        self._runner = runner

    @classmethod
    def load(cls, folder, threads: int | None = None) -> "Artifact":
        """Read ``signature.json``, the graph and the item ids; every problem is a UserError."""
        folder = os.fspath(folder)
        if not os.path.exists(folder):
            raise UserError(f"{folder}: artifact folder not found")
        if not os.path.isdir(folder):
            raise UserError(f"{folder}: is a file; give the artifact folder")
        signature = Signature.read(folder)
        return cls(folder, signature, _runner(folder, signature, threads),
                   ItemIds.read(folder, signature))

    def logits(self, columns: dict, by_length: bool = True) -> np.ndarray:
        """``{input name: (B,) or (B, h) int array}`` (rows, not raw ids; ``1 <= h <=
        max_len``) -> ``(B,) float32`` logits, in row order.

        The exported graph computes every row at the batch's history width ``h``. With the
        history as given in the graph (``padded_in_graph`` false) and ``by_length``, rows are
        grouped by the width their own history needs, on the training loader's bucket ladder
        (8, 16, 32, ... columns, up to ``h``), and each group is one graph call at its width
        (:func:`length_groups`): a batch of mostly short histories does not pay for its
        longest one. Dropping left padding does not change such a graph's scores (the export
        checked it), so the logits are those of one call, up to float rounding. Otherwise, for
        a batch of one width, and below :data:`MIN_ROWS_TO_GROUP` rows (where the cost of each
        extra call outweighs the padding it saves), one graph call.
        """
        arrays = [np.ascontiguousarray(columns[name], dtype=np.int64)
                  for name in self.signature.input_names]
        history = self.signature.input_names.index(contract.ITEM_SEQ)
        if (not by_length or self.signature.padded_in_graph
                or len(arrays[0]) < MIN_ROWS_TO_GROUP):
            return self._call(arrays)
        groups = length_groups(arrays[history])
        logits = np.empty(len(arrays[0]), dtype=np.float32)
        for rows, width in groups:
            part = list(arrays) if len(groups) == 1 else [array[rows] for array in arrays]
            part[history] = np.ascontiguousarray(part[history][:, -width:])
            logits[rows] = self._call(part)
        return logits

    def _call(self, arrays: list) -> np.ndarray:
        """One graph call on ready int64 arrays: ``(B,) float32`` logits."""
        logits = np.asarray(self._runner(arrays), dtype=np.float32).reshape(-1)
        if len(logits) != len(arrays[0]):
            raise UserError(f"{self.folder}: the graph returned {len(logits)} scores for "
                            f"{len(arrays[0])} rows")
        return logits

    def score_split(self, split, batch_rows: int = 4096) -> np.ndarray:
        """Logits of every row of a :class:`~fuxictr_mmctr.data.loader.SplitArrays` (rows
        already mapped), in row order: ``(N,) float32``. Each batch's history is cut to the
        most recent ``max_len`` columns, then to its longest real history (left padding only
        is dropped), as the training loader does."""
        from fuxictr_mmctr.data.batches import BatchLoader

        loader = BatchLoader(split, batch_size=batch_rows, max_len=self.signature.max_len,
                             trim_history=True)
        parts = [self.logits({name: batch[name].numpy() for name in self.signature.input_names})
                 for batch in loader]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def length_groups(item_seq: np.ndarray) -> list:
    """Rows grouped by the history width they need: ``(B, h)`` left-padded ids -> ``[(rows
    (n,) int64, width), ...]``, widths ascending on the loader's bucket ladder over ``h``
    (:func:`~fuxictr_mmctr.data.history_plan.bucket_ladder`); a row's width holds its real
    items (at least one column, so an empty history is one padding column)."""
    from fuxictr_mmctr.data.history_plan import bucket_ladder

    batch, width = item_seq.shape
    real = item_seq != contract.PADDING_ID
    spans = np.where(real.any(axis=1), width - real.argmax(axis=1), 0)       # (B,)
    ladder = np.asarray(bucket_ladder(width), dtype=np.int64)
    needed = ladder[np.searchsorted(ladder, np.maximum(spans, 1))]            # (B,)
    return [(np.flatnonzero(needed == value), int(value)) for value in np.unique(needed)]


def probabilities(logits: np.ndarray) -> np.ndarray:
    """``sigmoid(logit)`` in float64 without overflow, the formula ``prediction.py``'s scores
    use (the trainer's): ``(N,) -> (N,)``; confident scores never round to exactly 1.0."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, dtype=np.float64)))
