"""Adaptive micro-batching: many small requests become one runtime run.

Requests queue (bounded, counted in rows) until the queued rows fill a batch or the oldest
request has waited `max_batch_delay_ms`. One run per batcher is in flight at a time; while it
runs, new requests queue up, so batches grow with load on their own. A request bigger than
`max_batch_rows` runs as its own batch, split into runs of at most `max_batch_rows` rows.

No request holds more than `window_rows` (half the queue) at once: a bigger one enters window by
window, each after the previous one has run, so other callers still get in beside it. Work
belongs to its caller: when the caller leaves (its task is cancelled: the client cancelled or its
deadline passed), its queued rows leave the queue at once, its later windows never enter, and a
batch whose callers have all left stops after the run in progress.

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


@dataclass(eq=False, slots=True)  # eq=False: found in the queue by identity, not by its rows
class _Pending:
    rows: NDArray[np.float32]  # (n, F)
    n: int
    future: asyncio.Future[BatchSlice]
    enqueued_at: float  # loop.time()
    queued: bool = True  # still in the queue: not yet taken into a batch, nor dropped


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def window_rows(max_queue_rows: int, max_batch_rows: int) -> int:
    """The most rows one request holds in a queue of `max_queue_rows`: half of it, so others
    still get in. When that is at least one run, a whole number of runs, so a big request runs
    the same row ranges window by window as it would at once (and gets identical outputs)."""
    half = max(1, max_queue_rows // 2)
    return half - half % max_batch_rows if half >= max_batch_rows else half


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
        self._window_rows = window_rows(max_queue_rows, max_batch_rows)
        self._on_run = on_run
        self._name = name
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        # Rows of admitted requests' next windows waiting for room: new requests leave it to them.
        self._owed_rows = 0
        self._room_waiters: list[asyncio.Future[None]] = []
        self._waiter: asyncio.Future[None] | None = None
        self._wake_rows = 1  # queued rows at which a submit wakes the waiting worker
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def submit(self, rows: NDArray[np.float32]) -> BatchSlice:
        """Runs `rows` (n, F) in some batch; returns each output's (n, ...) slice.

        A request of more than `window_rows` rows runs window by window and gets one slice over
        all of them. QueueFull when its (first) window does not fit in the queue now.
        """
        self._check_open()
        n = rows.shape[0]
        window = self._window_rows
        self._check_room(min(n, window))
        if n <= window:
            return await self._enqueue(rows)
        pieces = []
        for start in range(0, n, window):
            piece = rows[start : start + window]
            if start:  # admitted: later windows wait for room, ahead of new requests
                await self._wait_for_room(piece.shape[0])
            pieces.append(await self._enqueue(piece))
        outputs = {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}
        return BatchSlice(Batch(rows, outputs), 0, n)

    async def close(self) -> None:
        """Stops the worker; requests still queued or waiting for room fail with NotReady."""
        self._closed = True
        self._rows_left()  # requests waiting for room see the batcher closed
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while self._queue:
            pending = self._queue.popleft()
            pending.queued = False
            if not pending.future.done():
                pending.future.set_exception(NotReady(f"{self._name} is shutting down"))
        self._queued_rows = 0

    def _check_open(self) -> None:
        if self._closed:
            raise NotReady(f"{self._name} is shutting down")

    def _check_room(self, n: int) -> None:
        if self._queued_rows + self._owed_rows + n <= self._max_queue_rows:
            return
        owed = self._owed_rows
        due = f" ({owed} more are due from requests running window by window)" if owed else ""
        raise QueueFull(
            f"{self._name}: {self._queued_rows} rows are queued{due} and {n} more would pass "
            f"the limit of {self._max_queue_rows} (LATENTWATCH_MAX_QUEUE_ROWS); retry later"
        )

    async def _wait_for_room(self, n: int) -> None:
        """Until `n` more rows fit in the queue; meanwhile new requests leave room for them."""
        loop = asyncio.get_running_loop()
        self._owed_rows += n
        try:
            while self._queued_rows + n > self._max_queue_rows:
                waiter = loop.create_future()
                self._room_waiters.append(waiter)
                await waiter
                self._check_open()
        finally:
            self._owed_rows -= n

    def _rows_left(self) -> None:
        """Rows left the queue: requests waiting for room look again."""
        waiters, self._room_waiters = self._room_waiters, []
        for waiter in waiters:
            _wake(waiter)

    async def _enqueue(self, rows: NDArray[np.float32]) -> BatchSlice:
        self._check_open()
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._worker = loop.create_task(self._work(), name=f"batcher {self._name}")
        future: asyncio.Future[BatchSlice] = loop.create_future()
        pending = _Pending(rows, rows.shape[0], future, loop.time())
        self._queue.append(pending)
        self._queued_rows += pending.n
        waiter = self._waiter
        if waiter is not None and self._queued_rows >= self._wake_rows and not waiter.done():
            waiter.set_result(None)
        try:
            return await future
        finally:
            if pending.queued:  # the caller left before its rows were taken into a batch
                self._drop(pending)

    def _drop(self, pending: _Pending) -> None:
        self._queue.remove(pending)
        pending.queued = False
        self._queued_rows -= pending.n
        self._rows_left()

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
            if head.future.done():  # cancelled, and its caller has not run to drop it yet
                self._drop(head)
                continue
            if batch and n_rows + head.n > self._max_batch_rows:
                break
            queue.popleft()
            head.queued = False
            self._queued_rows -= head.n
            batch.append(head)
            n_rows += head.n
            if n_rows >= self._max_batch_rows:
                break
        if batch:
            self._rows_left()
        return batch, n_rows

    async def _run(self, batch: list[_Pending], n_rows: int) -> None:
        try:
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([p.rows for p in batch])
            outputs = await self._infer(rows, batch)
        except asyncio.CancelledError:
            self._fail(batch, NotReady(f"{self._name} is shutting down"))
            raise
        except Exception as exc:
            log.error("%s: a batch of %d rows failed: %r", self._name, n_rows, exc)
            self._fail(batch, exc)
            return
        if outputs is None:
            log.debug("%s: a batch of %d rows stopped: its callers left", self._name, n_rows)
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

    async def _infer(
        self, rows: NDArray[np.float32], batch: list[_Pending]
    ) -> dict[str, NDArray] | None:
        """The runtime run(s) for one batch: runs of at most max_batch_rows rows. None when
        every caller of the batch left before its last run: the runs left are not started."""
        n, step = rows.shape[0], self._max_batch_rows
        if n <= step:
            return await self._infer_once(rows)
        parts = []
        for i in range(0, n, step):
            if all(p.future.done() for p in batch):
                return None
            parts.append(await self._infer_once(rows[i : i + step]))
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
