"""Micro-batching: concurrent requests share one model call.

Requests wait in a queue; one worker takes the first, keeps adding the ones that arrive until
the batch holds ``max_batch_rows`` rows or ``max_wait_ms`` has passed since the first was
taken, runs the model once on the merged rows (histories left-padded to the widest, which is
exact: padding does not change a score), and hands each request its own slice of the scores.
A request larger than ``max_batch_rows`` is scored alone. With ``max_batch_rows = 0`` every
request is its own model call (micro-batching off). Model calls run one at a time on a worker
thread, so the event loop keeps accepting requests meanwhile.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass, field

import numpy as np

from fuxictr_mmctr.serving.rows import merge


@dataclass
class _Pending:
    columns: dict
    rows: int
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """``await batcher.score(columns, rows) -> (rows,) float32 logits``.

    Args:
        score: ``score({name: array}) -> (B,) logits``, the artifact's one graph call.
        input_names: the graph's inputs (to merge requests).
        max_batch_rows: most rows per model call (0: no micro-batching).
        max_wait_ms: longest wait for more requests after the first of a batch arrived.
    """

    def __init__(self, score, input_names, max_batch_rows: int = 1024, max_wait_ms: float = 2.0):
        if max_batch_rows < 0:
            raise ValueError(f"max_batch_rows must be >= 0, got {max_batch_rows}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._score = score
        self.input_names = list(input_names)
        self.max_batch_rows = int(max_batch_rows)
        self.max_wait = float(max_wait_ms) / 1000.0
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                               thread_name_prefix="model")
        self._queue: asyncio.Queue | None = None
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        #: Model calls made and rows scored (for the load test and /health).
        self.calls = 0
        self.rows = 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._arrived = asyncio.Event()
        if self.max_batch_rows > 0:
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def score(self, columns: dict, rows: int) -> np.ndarray:
        """The logits of one request's rows, in order (micro-batched with others)."""
        loop = asyncio.get_running_loop()
        if self.max_batch_rows == 0 or rows >= self.max_batch_rows:
            return await loop.run_in_executor(self._executor, self._call, columns)
        pending = _Pending(columns, rows, loop.create_future())
        self._queue.put_nowait(pending)
        self._arrived.set()
        return await pending.future

    def _call(self, columns: dict) -> np.ndarray:
        logits = self._score(columns)
        self.calls += 1
        self.rows += len(logits)
        return logits

    async def _run(self) -> None:
        """The worker: gather a batch, score it, share the scores out; forever."""
        loop = asyncio.get_running_loop()
        carry: _Pending | None = None
        while True:
            first = carry or await self._queue.get()
            carry = None
            batch, rows = [first], first.rows
            deadline = time.perf_counter() + self.max_wait
            while rows < self.max_batch_rows and carry is None:
                if self._queue.empty():
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._arrived.clear()
                    try:   # waiting on an event, not on get(): a timeout never loses a request
                        await asyncio.wait_for(self._arrived.wait(), remaining)
                    except asyncio.TimeoutError:
                        pass
                    continue
                pending = self._queue.get_nowait()
                if rows + pending.rows > self.max_batch_rows:
                    carry = pending                  # starts the next batch
                else:
                    batch.append(pending)
                    rows += pending.rows
            live = [pending for pending in batch if not pending.future.done()]
            if not live:
                continue
            try:
                merged = merge([pending.columns for pending in live], self.input_names)
                logits = await loop.run_in_executor(self._executor, self._call, merged)
            except Exception as error:  # handed to the requests; the worker keeps serving
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            start = 0
            for pending in live:
                if not pending.future.done():
                    pending.future.set_result(logits[start:start + pending.rows])
                start += pending.rows
