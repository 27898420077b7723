"""Checkpoint files: best weights and resume state, always written atomically.

Two files live beside each other in ``<model_root>/<dataset_id>/``:

* ``<model_id>.model``: the best weights, a plain ``state_dict`` (what FuxiCTR's
  ``BaseModel.load_weights`` reads).
* ``<model_id>.resume.pt``: everything needed to continue an interrupted ``fit`` exactly
  (model and optimizer state, counters, early-stopping state, RNG states), written at each
  evaluation point.

Both are written to a temporary name and renamed (:func:`fuxictr_mmctr.fileio.atomic_path`),
so a crash while saving leaves the previous file intact and no partial file behind; a full disk
is one line naming the file (:func:`save_atomic`). Only
plain containers, numbers and tensors are stored, so ``torch.load(weights_only=True)`` reads
them.
"""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.fileio import atomic_path, write_error

RESUME_SUFFIX = ".resume.pt"
#: Version of the resume-state layout; bump when its keys change.
RESUME_FORMAT = 1


def resume_path(checkpoint: str) -> str:
    """``<dir>/<model_id>.resume.pt`` for the weights file ``<dir>/<model_id>.model``."""
    stem, _ = os.path.splitext(checkpoint)
    return stem + RESUME_SUFFIX


def save_atomic(obj, path: str) -> None:
    """``torch.save(obj)`` to ``path`` through a temporary file and a rename.

    A failed write (a full disk, a quota, a file-size limit) is one :class:`UserError` naming
    ``path`` and why; no partial file is left and the previous file stays as it was. The
    failure is recognised by where it happens, not by its message: ``torch.save`` writes
    through :class:`_WriteRecorder`, which keeps the ``OSError`` of the failing write (torch
    itself reports it as a ``RuntimeError`` from its zip writer that names no cause), and any
    ``RuntimeError`` of torch's writer counts as a failed write too. Other errors (an object
    that cannot be pickled) pass through unchanged.
    """
    with atomic_path(path) as tmp_path, open(tmp_path, "wb") as handle:
        recorder = _WriteRecorder(handle)
        try:
            torch.save(obj, recorder)
        except Exception as error:
            if recorder.error is not None and recorder.error.errno is not None:
                raise UserError(f"{write_error(path, recorder.error)}; the previous file is "
                                f"unchanged") from None
            if recorder.error is None and not isinstance(error, RuntimeError):
                raise  # not a write: e.g. an object that cannot be pickled
            failure = recorder.error or error
            reason = " ".join(str(failure).split()) or type(failure).__name__
            raise UserError(f"cannot write {path}: disk full or not writable ({reason}); the "
                            f"previous file is unchanged") from None


class _WriteRecorder:
    """A binary file for ``torch.save`` that keeps the first ``OSError`` its writes raise."""

    def __init__(self, handle):
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        with self._recording():
            return self.handle.write(data)

    def flush(self) -> None:
        with self._recording():
            self.handle.flush()

    @contextlib.contextmanager
    def _recording(self):
        try:
            yield
        except OSError as error:
            self.error = self.error or error
            raise


def load_file(path: str, what: str = "checkpoint"):
    """``torch.load`` of one of our files onto the CPU; missing or unreadable -> UserError."""
    if not os.path.exists(path):
        raise UserError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise UserError(f"{path}: not a readable {what} ({type(error).__name__})") from None


def capture_rng_state() -> dict:
    """RNG states of python, numpy, torch (CPU and every CUDA device)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    """Python's RNG state is nested tuples; a round trip may have turned them into lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(item) for item in value)
    return value


def plain(value):
    """``value`` reduced to what a resume state stores and compares: dicts, lists, strings,
    numbers, booleans and ``None`` (anything else, e.g. an in-memory item table, is left out)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items() if _is_plain(v)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value if _is_plain(v)]
    return value


def _is_plain(value) -> bool:
    if isinstance(value, (dict, list, tuple)):
        return True
    return value is None or isinstance(value, (str, int, float, bool))
