"""Checkpoint files: best weights and resume state, always written atomically.

Two files live beside each other in ``<model_root>/<dataset_id>/``:

* ``<model_id>.model``: the best weights, a plain ``state_dict`` (what FuxiCTR's
  ``BaseModel.load_weights`` reads).
* ``<model_id>.resume.pt``: everything needed to continue an interrupted ``fit`` exactly
  (model and optimizer state, counters, early-stopping state, RNG states), written at each
  evaluation point.

Both are written to a temporary name and renamed (:func:`fuxictr_mmctr.fileio.atomic_path`),
so a crash while saving leaves the previous file intact and no partial file behind. Only
plain containers, numbers and tensors are stored, so ``torch.load(weights_only=True)`` reads
them.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.fileio import atomic_path

RESUME_SUFFIX = ".resume.pt"
#: Version of the resume-state layout; bump when its keys change.
RESUME_FORMAT = 1


def resume_path(checkpoint: str) -> str:
    """``<dir>/<model_id>.resume.pt`` for the weights file ``<dir>/<model_id>.model``."""
    stem, _ = os.path.splitext(checkpoint)
    return stem + RESUME_SUFFIX


def save_atomic(obj, path: str) -> None:
    """``torch.save(obj)`` to ``path`` through a temporary file and a rename.

    A failed write (a full disk, a file-size limit) is one :class:`UserError` naming ``path``;
    the previous file stays as it was. ``torch.save`` reports such failures as a
    ``RuntimeError`` from its stream writer, not an ``OSError``.
    """
    with atomic_path(path) as tmp_path:
        try:
            torch.save(obj, tmp_path)
        except RuntimeError as error:
            if "write" not in str(error).lower():
                raise
            reason = str(error).strip().splitlines()[0]
            raise UserError(f"cannot write {path}: {reason} (is the disk full?); the previous "
                            f"file is unchanged") from None


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
