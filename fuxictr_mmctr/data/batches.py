"""BatchLoader: seeded, sharded batches of integer ids, delivered on the model's device.

Per batch only ids travel: ``(B, L)`` int32 history plus a few ``(B,)`` columns, gathered
with one ``index_select`` per column. On CUDA the gather writes into pinned host buffers
(two per column, reused once the previous copy from them has finished) and the copy is
``non_blocking``; int32 becomes int64 on the device, after the transfer, which halves the
bytes moved. With ``on_device=True`` the whole split lives on the device and batches are
gathered there (MicroLens train is ~1.5 GB as int32).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from fuxictr_mmctr.data.schema import ITEM_SEQ


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
        pin_memory: gather into pinned host memory (default: when ``device`` is CUDA).

    Each batch is ``{"user_id": (B,) int64, "item_id": (B,) int64, "item_seq": (B, max_len)
    int64, "likes_level": (B,) int64, "views_level": (B,) int64, "label": (B,) float32}``
    (``label`` only for labelled splits). :meth:`row_indices` says which rows, in order.
    """

    def __init__(self, split, batch_size: int, shuffle: bool = False, seed: int = 0,
                 max_len: int | None = None, device="cpu", drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, on_device: bool = False,
                 pin_memory: bool | None = None, even_shards: bool = False):
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
        self.pin_memory = (self.device.type == "cuda" if pin_memory is None else pin_memory) \
            and torch.cuda.is_available() and not on_device
        self.num_rows = split.num_rows
        self.epoch = 0
        self.max_len = max_len
        with warnings.catch_warnings():  # cached arrays are read-only memory maps; never written
            warnings.simplefilter("ignore", UserWarning)
            self._columns = {name: torch.from_numpy(_recent_columns(name, array, max_len))
                             for name, array in split.columns.items()}
        if on_device:
            self._columns = {name: column.to(self.device) for name, column in self._columns.items()}
        self._pinned = _PinnedBuffers() if self.pin_memory else None

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
        indices = torch.from_numpy(self.row_indices())
        if self.on_device:
            indices = indices.to(self.device)
        for step in range(len(self)):
            yield self._batch(indices[step * self.batch_size:(step + 1) * self.batch_size])

    def _batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = {}
        for name, column in self._columns.items():
            if self._pinned is not None:
                host = self._pinned.gather(name, column, rows)
            else:
                host = column.index_select(0, rows)
            values = host.to(self.device, non_blocking=True)
            if not values.is_floating_point() and values.dtype != torch.int64:
                values = values.long()  # after the copy: int32 crosses the bus, int64 is used
            batch[name] = values
        if self._pinned is not None:
            self._pinned.record()
        return batch


class _PinnedBuffers:
    """Two pinned host buffers per column, used in turn; a buffer is reused only after the
    copy that last read from it has completed (tracked with a CUDA event)."""

    def __init__(self):
        self.buffers = {}
        self.events = [None, None]
        self.turn = 0

    def gather(self, name, column: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        slot = self.turn % 2
        if self.events[slot] is not None:
            self.events[slot].synchronize()
            self.events[slot] = None
        shape = (len(rows),) + tuple(column.shape[1:])
        buffer = self.buffers.get((name, slot))
        if buffer is None or buffer.shape[0] < shape[0]:
            buffer = torch.empty(shape, dtype=column.dtype).pin_memory()
            self.buffers[(name, slot)] = buffer
        out = buffer[:shape[0]]
        torch.index_select(column, 0, rows, out=out)
        return out

    def record(self):
        event = torch.cuda.Event()
        event.record()
        self.events[self.turn % 2] = event
        self.turn += 1


def _recent_columns(name: str, array: np.ndarray, max_len: int | None) -> np.ndarray:
    """The last ``max_len`` history columns (left padding means the most recent are last)."""
    if name != ITEM_SEQ or max_len is None or max_len >= array.shape[1]:
        return array
    return np.ascontiguousarray(array[:, array.shape[1] - max_len:])
