"""BatchLoader: seeded, sharded batches of integer ids, delivered on the model's device.

Per batch only ids travel: ``(B, L)`` int32 history plus a few ``(B,)`` columns, gathered
with one ``index_select`` per column. On CUDA the gather writes into pinned host buffers
(two per column, reused once the previous copy from them has finished) and the copy is
``non_blocking``; int32 becomes int64 on the device, after the transfer, which halves the
bytes moved. With ``on_device=True`` the whole split lives on the device and batches are
gathered there (MicroLens train is ~1.5 GB as int32).

Each row's span (positions from its first real history item to the end) is computed once, on
the host, when the loader is made. Every batch carries its history plan
(:mod:`fuxictr_mmctr.data.history_plan`: the real positions, the rows grouped by length), made
from those spans on the host and moved with the ids, so no layer needs a device sync to find
the real positions. With ``trim_history=True`` each batch's history is also cut to its longest
real history: histories are left-padded, so the leading columns that are padding in every row
of the batch are dropped (the width is rounded up to the bucket ladder, so there are only a few
distinct widths).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from fuxictr_mmctr.data.history_plan import (  # noqa: F401  (re-exported: the loader's widths)
    BUCKETS_KEY,
    MIN_BUCKET_WIDTH,
    bucket_ladder,
    history_spans,
    plan_of_spans,
    span_of_rows,
    trimmed_width,
)
from fuxictr_mmctr.data.schema import ITEM_SEQ
from fuxictr_mmctr.errors import UserError


class BatchLoader:
    """Iterate a :class:`~fuxictr_mmctr.data.loader.SplitArrays` in batches of tensors.

    Args:
        split: the split's arrays.
        batch_size: rows per batch (the last one may be smaller unless ``drop_last``).
        shuffle: visit rows in the permutation of ``seed + epoch`` (see :meth:`set_epoch`).
        seed: shuffling seed; the same seed and epoch give the same batches.
        max_len: keep the last ``max_len`` history columns (the most recent items).
        device: where batches are delivered.
        drop_last: skip a final partial batch.
        rank, world_size: this process's shard. Shuffled: rank ``r`` takes every
            ``world_size``-th row of the permutation; not shuffled (evaluation): a contiguous
            block of rows in file order. Either way every row is in exactly one shard; shard
            sizes differ by at most one row (use DDP's ``join()`` for uneven last steps).
        even_shards: every rank gets ``num_rows // world_size`` rows (the last
            ``num_rows % world_size`` rows of each epoch's order are left out: different ones
            each epoch when shuffled), so all ranks run the same number of steps, as DDP
            training needs.
        on_device: hold the whole split on ``device`` and gather there.
        pin_memory: gather into pinned host memory (default ``None``: when ``device`` is CUDA
            and the split is not on the device; ``True`` elsewhere is a :class:`UserError`).
        trim_history: drop the leading columns of ``item_seq`` that are padding in every row of
            the batch (exact for models whose output does not depend on padding, see
            :func:`fuxictr_mmctr.layers.packing.history_trim_exact`).

    Each batch is ``{"user_id": (B,) int64, "item_id": (B,) int64, "item_seq": (B, W) int64,
    "likes_level": (B,) int64, "views_level": (B,) int64, "label": (B,) float32}`` (``label``
    only for labelled splits), ``W = max_len`` (or the split's width) unless ``trim_history``,
    plus the batch's history plan (``history_lengths``, ``history_slots``, ``history_order``
    on the device, ``history_buckets`` on the host; :mod:`fuxictr_mmctr.data.history_plan`).
    :meth:`row_indices` says which rows, in order; :meth:`iter_from` starts at a later batch
    without gathering the ones before it.
    """

    def __init__(self, split, batch_size: int, shuffle: bool = False, seed: int = 0,
                 max_len: int | None = None, device="cpu", drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, on_device: bool = False,
                 pin_memory: bool | None = None, even_shards: bool = False,
                 trim_history: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.rank, self.world_size = rank, world_size
        self.even_shards = even_shards
        self.on_device = on_device
        self.pin_memory = _pinning(pin_memory, self.device, on_device)
        self.num_rows = split.num_rows
        self.epoch = 0
        self.max_len = max_len
        with warnings.catch_warnings():  # cached arrays are read-only memory maps; never written
            warnings.simplefilter("ignore", UserWarning)
            self._columns = {name: torch.from_numpy(_recent_columns(name, array, max_len))
                             for name, array in split.columns.items()}
        self.trim_history = bool(trim_history) and ITEM_SEQ in self._columns
        self._spans = (span_of_rows(self._columns[ITEM_SEQ].numpy()) if ITEM_SEQ in self._columns
                       else None)
        if on_device:
            self._columns = {name: column.to(self.device) for name, column in self._columns.items()}
        self._pinned = _PinnedBuffers(self.device) if self.pin_memory else None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration uses."""
        self.epoch = int(epoch)

    def row_indices(self) -> np.ndarray:
        """Rows this rank yields in the current epoch, in order: ``(shard_rows,) int64``."""
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(self.num_rows)
            if self.even_shards:
                order = order[:self.num_rows - self.num_rows % self.world_size]
            return order[self.rank::self.world_size]
        kept = self.num_rows - self.num_rows % self.world_size if self.even_shards else self.num_rows
        bounds = np.linspace(0, kept, self.world_size + 1).astype(np.int64)
        return np.arange(bounds[self.rank], bounds[self.rank + 1], dtype=np.int64)

    @property
    def shard_rows(self) -> int:
        """Rows in this rank's shard."""
        if self.even_shards:
            return self.num_rows // self.world_size
        if self.shuffle:
            return len(range(self.rank, self.num_rows, self.world_size))
        return len(self.row_indices())

    def __len__(self) -> int:
        rows = self.shard_rows
        return rows // self.batch_size if self.drop_last else math.ceil(rows / self.batch_size)

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, first_batch: int):
        """The current epoch's batches from batch ``first_batch`` on (the same batches as
        ``list(self)[first_batch:]``); the rows of the batches before it are never gathered
        (resuming mid-epoch)."""
        host_indices = self.row_indices()[int(first_batch) * self.batch_size:]
        indices = torch.from_numpy(host_indices)
        if self.on_device:
            indices = indices.to(self.device)
        for step in range(max(len(self) - int(first_batch), 0)):
            chunk = slice(step * self.batch_size, (step + 1) * self.batch_size)
            yield self._batch(indices[chunk], host_indices[chunk])

    def history_width(self, host_rows: np.ndarray) -> int | None:
        """Width of the batch of ``host_rows`` after trimming (``None``: not trimmed)."""
        if not self.trim_history:
            return None
        length = self._columns[ITEM_SEQ].shape[1]
        return trimmed_width(int(self._spans[host_rows].max(initial=0)), length)

    def _batch(self, rows: torch.Tensor, host_rows: np.ndarray) -> dict:
        batch = {}
        width = self.history_width(host_rows)
        for name, column in self._columns.items():
            if name == ITEM_SEQ and width is not None:
                column = column[:, column.shape[1] - width:]   # leading columns: padding only
            if self._pinned is not None:
                host = self._pinned.gather(name, column, rows)
            else:
                host = column.index_select(0, rows)
            batch[name] = self._to_device(host)
        if self._spans is not None:
            history_width = width or self._columns[ITEM_SEQ].shape[1]
            for name, value in plan_of_spans(self._spans[host_rows], history_width).items():
                if name != BUCKETS_KEY:           # the bucket sizes stay on the host
                    if self._pinned is not None:
                        value = self._pinned.hold(name, value)
                    value = self._to_device(value)
                batch[name] = value
        if self._pinned is not None:
            self._pinned.record()
        return batch

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        values = host.to(self.device, non_blocking=True)
        if not values.is_floating_point() and values.dtype != torch.int64:
            values = values.long()  # after the copy: int32 crosses the bus, int64 is used
        return values


class _PinnedBuffers:
    """Two pinned host buffers per column, used in turn; a buffer is reused only after the
    copy that last read from it has completed (tracked with a CUDA event recorded on the
    current stream of the batches' device, whatever the process's current device is)."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.buffers = {}
        self.events = [None, None]
        self.turn = 0

    def gather(self, name, column: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``column[rows]`` written into a pinned buffer (its width may change per batch)."""
        out = self._buffer(name, (len(rows),) + tuple(column.shape[1:]), column.dtype)
        torch.index_select(column, 0, rows, out=out)
        return out

    def hold(self, name, values: torch.Tensor) -> torch.Tensor:
        """``values`` copied into a pinned buffer."""
        return self._buffer(name, tuple(values.shape), values.dtype).copy_(values)

    def _buffer(self, name, shape: tuple, dtype) -> torch.Tensor:
        """This turn's pinned buffer of ``name``, at least ``shape`` big, once free."""
        slot = self.turn % 2
        if self.events[slot] is not None:
            self.events[slot].synchronize()
            self.events[slot] = None
        size = math.prod(shape)
        buffer = self.buffers.get((name, slot))
        if buffer is None or buffer.numel() < size or buffer.dtype != dtype:
            buffer = torch.empty(max(size, 1), dtype=dtype).pin_memory()
            self.buffers[(name, slot)] = buffer
        return buffer[:size].view(shape)

    def record(self):
        """Mark the copies queued so far: on the stream that runs them (the batches' device's
        current stream; recording on the process's current device would mark another GPU's
        queue and let the buffer be rewritten before its copy ran)."""
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        self.events[self.turn % 2] = event
        self.turn += 1


def _pinning(pin_memory: bool | None, device: torch.device, on_device: bool) -> bool:
    """Whether batches are gathered into pinned host memory; an impossible request is an error."""
    if pin_memory is None:
        return device.type == "cuda" and not on_device
    if pin_memory and device.type != "cuda":
        raise UserError(f"loader pin_memory: True needs a CUDA device (batches go to {device}); "
                        f"leave it out: batches for a GPU are pinned by default")
    if pin_memory and on_device:
        raise UserError("loader on_device and pin_memory exclude each other: a split held on "
                        "the device is never copied from the host")
    return bool(pin_memory)


def _recent_columns(name: str, array: np.ndarray, max_len: int | None) -> np.ndarray:
    """The last ``max_len`` history columns (left padding means the most recent are last)."""
    if name != ITEM_SEQ or max_len is None or max_len >= array.shape[1]:
        return array
    return np.ascontiguousarray(array[:, array.shape[1] - max_len:])
