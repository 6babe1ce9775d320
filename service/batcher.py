"""Adaptive micro-batching: many small requests become one runtime run.

Requests queue (bounded, counted in rows) until the queued rows fill a batch or the oldest
request has waited `max_batch_delay_ms`. One run per batcher is in flight at a time; while it
runs, new requests queue up, so batches grow with load on their own. A request bigger than
`max_batch_rows` runs as its own batch, split into runs of at most `max_batch_rows` rows.

It turns rows into graph outputs and nothing else: each caller gets a `BatchSlice`, its rows of
the batch's outputs. What is derived from outputs (score kinds, p-values) is computed after it,
once per batch, in the batch's `memo` (service/batch_scoring.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import NotReady, QueueFull
from latentwatch.service.runtime import Runtime

log = logging.getLogger(__name__)

Outputs = Mapping[str, NDArray]


@dataclass(eq=False)
class Batch:
    """One batch: its rows (B, F) and graph outputs (B, ...); `memo` holds what its callers
    derived from them, so that work is done once per batch."""

    rows: NDArray[np.float32]
    outputs: dict[str, NDArray]
    memo: dict[str, Any] = field(default_factory=dict)


class BatchSlice(Mapping[str, NDArray]):
    """One caller's rows [start, stop) of a batch: output name -> (n, ...) slice."""

    __slots__ = ("batch", "start", "stop")

    def __init__(self, batch: Batch, start: int, stop: int) -> None:
        self.batch = batch
        self.start = start
        self.stop = stop

    def __getitem__(self, name: str) -> NDArray:
        return self.batch.outputs[name][self.start : self.stop]

    def __iter__(self) -> Iterator[str]:
        return iter(self.batch.outputs)

    def __len__(self) -> int:
        return len(self.batch.outputs)

    @property
    def rows(self) -> NDArray[np.float32]:
        return self.batch.rows[self.start : self.stop]


@dataclass(slots=True)
class _Pending:
    rows: NDArray[np.float32]  # (n, F)
    n: int
    future: asyncio.Future[BatchSlice]
    enqueued_at: float  # loop.time()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class MicroBatcher:
    """Batches `submit` calls for one runtime; every caller gets its own slice of each output.

    `on_run` is told the rows of every runtime run (for a histogram); outputs must keep the
    batch axis first.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        max_batch_rows: int = 256,
        max_batch_delay_ms: float = 2.0,
        max_queue_rows: int = 8192,
        on_run: Callable[[int], None] | None = None,
        name: str = "model",
    ) -> None:
        if max_batch_rows <= 0 or max_queue_rows <= 0 or max_batch_delay_ms < 0:
            raise ValueError("batch and queue limits must be positive, the delay non-negative")
        self._runtime = runtime
        self._input_name = runtime.inputs[0].name
        self._max_batch_rows = max_batch_rows
        self._delay_s = max_batch_delay_ms / 1000.0
        self._max_queue_rows = max_queue_rows
        self._on_run = on_run
        self._name = name
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._waiter: asyncio.Future[None] | None = None
        self._wake_rows = 1  # queued rows at which a submit wakes the waiting worker
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def submit(self, rows: NDArray[np.float32]) -> BatchSlice:
        """Runs `rows` (n, F) in some batch; returns each output's (n, ...) slice."""
        if self._closed:
            raise NotReady(f"{self._name} is shutting down")
        n = rows.shape[0]
        # An empty queue admits any request, so one within max_request_rows always gets in.
        if self._queued_rows and self._queued_rows + n > self._max_queue_rows:
            raise QueueFull(
                f"{self._name}: {self._queued_rows} rows are queued and {n} more would pass "
                f"the limit of {self._max_queue_rows}; retry later"
            )
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._worker = loop.create_task(self._work(), name=f"batcher {self._name}")
        future: asyncio.Future[BatchSlice] = loop.create_future()
        self._queue.append(_Pending(rows, n, future, loop.time()))
        self._queued_rows += n
        waiter = self._waiter
        if waiter is not None and self._queued_rows >= self._wake_rows and not waiter.done():
            waiter.set_result(None)
        return await future

    async def close(self) -> None:
        """Stops the worker; requests still queued fail with NotReady."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(NotReady(f"{self._name} is shutting down"))
        self._queued_rows = 0

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                await self._wait(1, None)
                continue
            if self._queued_rows < self._max_batch_rows and self._delay_s > 0:
                deadline = self._queue[0].enqueued_at + self._delay_s
                if loop.time() < deadline:
                    await self._wait(self._max_batch_rows, deadline)
                    continue
            batch, n_rows = self._take()
            if batch:
                await self._run(batch, n_rows)

    async def _wait(self, wake_rows: int, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._wake_rows = wake_rows
        self._waiter = waiter = loop.create_future()
        timer = None if deadline is None else loop.call_at(deadline, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _take(self) -> tuple[list[_Pending], int]:
        """Pops whole requests, oldest first, up to max_batch_rows (a big request goes alone)."""
        batch: list[_Pending] = []
        n_rows = 0
        queue = self._queue
        while queue:
            head = queue[0]
            if head.future.done():  # the caller gave up (cancelled): drop it unrun
                queue.popleft()
                self._queued_rows -= head.n
                continue
            if batch and n_rows + head.n > self._max_batch_rows:
                break
            queue.popleft()
            self._queued_rows -= head.n
            batch.append(head)
            n_rows += head.n
            if n_rows >= self._max_batch_rows:
                break
        return batch, n_rows

    async def _run(self, batch: list[_Pending], n_rows: int) -> None:
        try:
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([p.rows for p in batch])
            outputs = await self._infer(rows)
        except asyncio.CancelledError:
            self._fail(batch, NotReady(f"{self._name} is shutting down"))
            raise
        except Exception as exc:
            log.error("%s: a batch of %d rows failed: %r", self._name, n_rows, exc)
            self._fail(batch, exc)
            return
        done = Batch(rows, outputs)
        start = 0
        for pending in batch:
            stop = start + pending.n
            if not pending.future.done():
                pending.future.set_result(BatchSlice(done, start, stop))
            start = stop

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)

    async def _infer(self, rows: NDArray[np.float32]) -> dict[str, NDArray]:
        """The runtime run(s) for one batch: runs of at most max_batch_rows rows."""
        n, step = rows.shape[0], self._max_batch_rows
        if n <= step:
            return await self._infer_once(rows)
        parts = [await self._infer_once(rows[i : i + step]) for i in range(0, n, step)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    async def _infer_once(self, rows: NDArray[np.float32]) -> dict[str, NDArray]:
        outputs = await self._runtime.infer({self._input_name: rows})
        n = rows.shape[0]
        for name, value in outputs.items():
            # A graph that drops or changes the batch axis would hand callers other rows.
            if value.ndim == 0 or value.shape[0] != n:
                raise RuntimeError(
                    f"{self._name}: output {name!r} has shape {list(value.shape)} for {n} rows"
                )
        if self._on_run is not None:
            self._on_run(n)
        return outputs
