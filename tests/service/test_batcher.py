"""MicroBatcher with fake runtimes: routing, flushing, back-pressure and failures."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Mapping

import numpy as np
import pytest
from numpy.typing import NDArray

from latentwatch.errors import NotReady, QueueFull
from latentwatch.service.batcher import MicroBatcher
from latentwatch.service.runtime import TensorSpec


class SumRuntime:
    """Per row: the sum of its values, and the row doubled. Records rows per run."""

    inputs = (TensorSpec("input", "FP32", ("batch", 3)),)
    outputs = (TensorSpec("sum", "FP32", ("batch",)), TensorSpec("twice", "FP32", ("batch", 3)))
    provider = "fake"
    batches_itself = False

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.runs: list[int] = []
        self.gate = gate
        self.entered = asyncio.Event()  # a run has started (and may be held at the gate)

    async def load(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def infer(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
        self.entered.set()
        if self.gate is not None:
            await asyncio.wait_for(self.gate.wait(), 10)  # the test gate must open
        x = feeds["input"]
        self.runs.append(x.shape[0])
        return {"sum": x.sum(axis=1), "twice": 2 * x}


class FailingRuntime(SumRuntime):
    """Fails its first `failures` runs, then sums."""

    def __init__(self, failures: int = 1_000_000) -> None:
        super().__init__()
        self.failures = failures

    async def infer(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("runtime exploded")
        return await super().infer(feeds)


def rows(n: int, start: float) -> NDArray[np.float32]:
    return (start + np.arange(n * 3, dtype=np.float32)).reshape(n, 3)


def test_every_caller_gets_its_own_rows() -> None:
    async def main() -> None:
        runtime = SumRuntime()
        batcher = MicroBatcher(runtime, max_batch_rows=16, max_batch_delay_ms=5)
        inputs = [rows(1 + i % 4, start=100.0 * i) for i in range(40)]
        results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        for x, out in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(out["sum"], x.sum(axis=1))
            np.testing.assert_array_equal(out["twice"], 2 * x)
        assert sum(runtime.runs) == sum(len(x) for x in inputs)
        assert len(runtime.runs) < len(inputs)  # requests were batched together
        assert max(runtime.runs) <= 16
        await batcher.close()

    asyncio.run(main())


def test_flushes_when_the_batch_is_full() -> None:
    async def main() -> None:
        runtime = SumRuntime()
        batcher = MicroBatcher(runtime, max_batch_rows=4, max_batch_delay_ms=30_000)
        start = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(batcher.submit(rows(1, i)) for i in range(4))), 5)
        assert time.monotonic() - start < 5
        assert runtime.runs == [4]
        await batcher.close()

    asyncio.run(main())


def test_flushes_after_the_delay() -> None:
    async def main() -> None:
        runtime = SumRuntime()
        batcher = MicroBatcher(runtime, max_batch_rows=100, max_batch_delay_ms=80)
        start = time.monotonic()
        out = await batcher.submit(rows(2, 0))
        waited_s = time.monotonic() - start
        assert 0.07 <= waited_s < 2.0
        assert runtime.runs == [2]
        np.testing.assert_array_equal(out["sum"], rows(2, 0).sum(axis=1))
        await batcher.close()

    asyncio.run(main())


def test_full_queue_raises_queue_full_and_admitted_requests_still_finish() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        runtime = SumRuntime(gate)
        batcher = MicroBatcher(runtime, max_batch_rows=2, max_batch_delay_ms=0, max_queue_rows=4)
        running = asyncio.ensure_future(batcher.submit(rows(2, 0)))
        while not runtime.entered.is_set():  # the worker took it and waits at the gate
            await asyncio.sleep(0.001)
        queued = [asyncio.ensure_future(batcher.submit(rows(2, i))) for i in (10, 20)]
        await asyncio.sleep(0.01)
        assert batcher.queued_rows == 4
        with pytest.raises(QueueFull, match="limit of 4"):
            await batcher.submit(rows(1, 99))
        gate.set()
        results = await asyncio.gather(running, *queued)
        assert [r["sum"].shape for r in results] == [(2,), (2,), (2,)]
        assert batcher.queued_rows == 0
        await batcher.close()

    asyncio.run(main())


def test_a_failing_batch_fails_every_waiter_and_the_batcher_recovers() -> None:
    async def main() -> None:
        runtime = FailingRuntime(failures=1)
        batcher = MicroBatcher(runtime, max_batch_rows=64, max_batch_delay_ms=20)
        results = await asyncio.gather(
            *(batcher.submit(rows(1, i)) for i in range(6)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results), results
        out = await batcher.submit(rows(3, 0))  # the next batch runs normally
        np.testing.assert_array_equal(out["sum"], rows(3, 0).sum(axis=1))
        await batcher.close()

    asyncio.run(main())


def test_big_requests_run_alone_in_runs_of_at_most_max_batch_rows() -> None:
    async def main() -> None:
        runtime = SumRuntime()
        batcher = MicroBatcher(runtime, max_batch_rows=4, max_batch_delay_ms=10)
        big, small_a, small_b = rows(10, 0), rows(1, 1000), rows(2, 2000)
        out_a, out_big, out_b = await asyncio.gather(
            batcher.submit(small_a), batcher.submit(big), batcher.submit(small_b)
        )
        np.testing.assert_array_equal(out_big["sum"], big.sum(axis=1))
        np.testing.assert_array_equal(out_big["twice"], 2 * big)
        np.testing.assert_array_equal(out_a["sum"], small_a.sum(axis=1))
        np.testing.assert_array_equal(out_b["sum"], small_b.sum(axis=1))
        # small_a alone (big does not fit beside it), big in runs of 4, 4, 2, then small_b.
        assert runtime.runs == [1, 4, 4, 2, 2]
        await batcher.close()

    asyncio.run(main())


def test_a_cancelled_caller_is_not_run() -> None:
    async def main() -> None:
        runtime = SumRuntime()
        batcher = MicroBatcher(runtime, max_batch_rows=100, max_batch_delay_ms=50)
        gone = asyncio.ensure_future(batcher.submit(rows(5, 0)))
        kept = asyncio.ensure_future(batcher.submit(rows(1, 0)))
        await asyncio.sleep(0.005)
        gone.cancel()
        out = await kept
        assert runtime.runs == [1]
        np.testing.assert_array_equal(out["sum"], rows(1, 0).sum(axis=1))
        await batcher.close()

    asyncio.run(main())


def test_close_fails_queued_requests_and_refuses_new_ones() -> None:
    async def main() -> None:
        batcher = MicroBatcher(SumRuntime(), max_batch_rows=100, max_batch_delay_ms=60_000)
        waiting = asyncio.ensure_future(batcher.submit(rows(1, 0)))
        await asyncio.sleep(0.01)
        await batcher.close()
        with pytest.raises(NotReady):
            await waiting
        with pytest.raises(NotReady):
            await batcher.submit(rows(1, 0))

    asyncio.run(main())


def test_a_graph_that_drops_the_batch_axis_fails_the_batch() -> None:
    class ScalarRuntime(SumRuntime):
        async def infer(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
            return {"sum": np.asarray(feeds["input"].sum())}  # 0-d: no batch axis

    async def main() -> None:
        batcher = MicroBatcher(ScalarRuntime(), max_batch_rows=8, max_batch_delay_ms=5)
        results = await asyncio.gather(
            batcher.submit(rows(1, 0)), batcher.submit(rows(2, 0)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) and "shape" in str(r) for r in results)
        await batcher.close()

    asyncio.run(main())


def test_on_run_sees_the_rows_of_every_runtime_run() -> None:
    async def main() -> None:
        runtime = SumRuntime()
        seen: list[int] = []
        batcher = MicroBatcher(runtime, max_batch_rows=4, max_batch_delay_ms=10, on_run=seen.append)
        await asyncio.gather(batcher.submit(rows(1, 0)), batcher.submit(rows(10, 0)))
        assert seen == runtime.runs == [1, 4, 4, 2]
        await batcher.close()

    asyncio.run(main())


def test_callers_of_one_batch_share_its_outputs_and_memo() -> None:
    async def main() -> None:
        runtime = SumRuntime()
        batcher = MicroBatcher(runtime, max_batch_rows=16, max_batch_delay_ms=30_000)
        inputs = [rows(2, 0), rows(3, 100), rows(11, 200)]  # 16 rows: one full batch
        parts = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        assert runtime.runs == [16]
        assert parts[0].batch is parts[1].batch is parts[2].batch
        np.testing.assert_array_equal(parts[0].batch.rows, np.concatenate(inputs))
        parts[0].batch.memo["seen"] = True
        assert parts[2].batch.memo == {"seen": True}
        for x, part in zip(inputs, parts, strict=True):
            assert sorted(part) == ["sum", "twice"] and len(part) == 2
            np.testing.assert_array_equal(part.rows, x)
            np.testing.assert_array_equal(part["sum"], x.sum(axis=1))
        await batcher.close()

    asyncio.run(main())


class RecordingRuntime(SumRuntime):
    """Sums, and records the batcher's queued rows at every run and each run's first value."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        super().__init__(gate)
        self.batcher: MicroBatcher | None = None
        self.queued: list[int] = []
        self.firsts: list[float] = []

    async def infer(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
        assert self.batcher is not None
        self.queued.append(self.batcher.queued_rows)
        out = await super().infer(feeds)
        self.firsts.append(float(feeds["input"][0, 0]))
        return out


class SteppedRuntime(RecordingRuntime):
    """Records, and starts a run only when the test releases a step."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = asyncio.Semaphore(0)
        self.started = 0  # runs started (some may be held)

    async def infer(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
        self.entered.set()
        self.started += 1
        await asyncio.wait_for(self.steps.acquire(), 10)
        return await super().infer(feeds)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not met in 5 s")


def test_a_caller_that_leaves_takes_its_rows_out_of_the_queue_at_once() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        runtime = SumRuntime(gate)
        batcher = MicroBatcher(runtime, max_batch_rows=2, max_batch_delay_ms=0, max_queue_rows=12)
        running = asyncio.ensure_future(batcher.submit(rows(2, 0)))
        await until(runtime.entered.is_set)  # the worker is busy: what comes next queues
        gone = asyncio.ensure_future(batcher.submit(rows(6, 100)))
        await asyncio.sleep(0.01)
        assert batcher.queued_rows == 6
        gone.cancel()
        await asyncio.sleep(0)
        assert batcher.queued_rows == 0  # at once, not when the worker gets to it
        kept = asyncio.ensure_future(batcher.submit(rows(8, 200)))  # would not fit beside it
        gate.set()
        await asyncio.gather(running, kept)
        assert runtime.runs == [2, 2, 2, 2, 2]  # the cancelled rows never ran
        await batcher.close()

    asyncio.run(main())


def test_a_batch_whose_callers_left_stops_after_the_run_in_progress() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        runtime = SumRuntime(gate)
        batcher = MicroBatcher(runtime, max_batch_rows=2, max_batch_delay_ms=0)
        gone = asyncio.ensure_future(batcher.submit(rows(10, 0)))  # one batch, 5 runs
        await until(runtime.entered.is_set)
        gone.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        out = await batcher.submit(rows(1, 50))  # runs after what is left of the batch
        np.testing.assert_array_equal(out["sum"], rows(1, 50).sum(axis=1))
        assert runtime.runs == [2, 1]  # the run in progress finished; the 4 others never ran
        await batcher.close()

    asyncio.run(main())


def test_a_request_bigger_than_the_queue_enters_window_by_window_with_others_beside_it() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        runtime = RecordingRuntime(gate)
        batcher = runtime.batcher = MicroBatcher(
            runtime, max_batch_rows=2, max_batch_delay_ms=0, max_queue_rows=8
        )
        first = asyncio.ensure_future(batcher.submit(rows(2, 0)))
        await until(runtime.entered.is_set)
        big_rows = rows(20, 1000)  # 2.5 times the queue: windows of 4 (half of it)
        big = asyncio.ensure_future(batcher.submit(big_rows))
        await asyncio.sleep(0.01)
        assert batcher.queued_rows == 4  # its first window, not all of it
        small = asyncio.ensure_future(batcher.submit(rows(3, 5000)))  # gets in beside it
        await asyncio.sleep(0.01)
        gate.set()
        out_big, out_small, _ = await asyncio.gather(big, small, first)
        np.testing.assert_array_equal(out_big["sum"], big_rows.sum(axis=1))
        np.testing.assert_array_equal(out_big["twice"], 2 * big_rows)
        np.testing.assert_array_equal(out_big.rows, big_rows)
        np.testing.assert_array_equal(out_small["sum"], rows(3, 5000).sum(axis=1))
        assert max(runtime.queued) <= 8
        # The big request's runs are the row ranges it would have as one batch: 10 runs of 2.
        big_runs = [i for i, v in enumerate(runtime.firsts) if 1000 <= v < 5000]
        assert [runtime.runs[i] for i in big_runs] == [2] * 10
        assert runtime.firsts[big_runs[0]] == 1000 and big_runs[-1] == len(runtime.runs) - 1
        small_run = runtime.firsts.index(5000.0)
        assert small_run < big_runs[-1]  # answered between the big request's windows
        assert batcher.queued_rows == 0
        await batcher.close()

    asyncio.run(main())


def test_later_windows_wait_for_room_ahead_of_new_requests() -> None:
    async def main() -> None:
        runtime = SteppedRuntime()
        batcher = runtime.batcher = MicroBatcher(
            runtime, max_batch_rows=2, max_batch_delay_ms=0, max_queue_rows=8
        )
        big = asyncio.ensure_future(batcher.submit(rows(12, 0)))  # windows of 4: 2 runs each
        await until(runtime.entered.is_set)  # its first window is running
        others = [asyncio.ensure_future(batcher.submit(rows(1, 100 * i))) for i in range(1, 9)]
        await asyncio.sleep(0.01)
        assert batcher.queued_rows == 8  # the queue is full of others
        runtime.steps.release()
        runtime.steps.release()  # the first window's two runs end; the next batch is 2 others
        await until(lambda: runtime.started == 3)  # the third run: 2 of the others
        await asyncio.sleep(0.01)
        assert batcher.queued_rows == 6  # no room for the big request's second window yet
        # It waits for room, and a newcomer does not take that room from it.
        with pytest.raises(QueueFull, match="due from requests running window by window"):
            await batcher.submit(rows(1, 999))
        for _ in range(100):
            runtime.steps.release()
        out, *_ = await asyncio.gather(big, *others)
        np.testing.assert_array_equal(out["sum"], rows(12, 0).sum(axis=1))
        assert max(runtime.queued) <= 8
        await batcher.close()

    asyncio.run(main())


def test_a_big_request_whose_caller_leaves_runs_no_later_window() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        runtime = SumRuntime(gate)
        batcher = MicroBatcher(runtime, max_batch_rows=2, max_batch_delay_ms=0, max_queue_rows=8)
        gone = asyncio.ensure_future(batcher.submit(rows(40, 0)))  # 10 windows of 4
        await until(runtime.entered.is_set)
        gone.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        await batcher.submit(rows(8, 0))  # the whole queue is free again
        assert runtime.runs == [2, 2, 2, 2, 2]  # its run in progress, then the newcomer's
        await batcher.close()

    asyncio.run(main())


def test_close_fails_a_big_request_running_window_by_window() -> None:
    async def main() -> None:
        runtime = SteppedRuntime()
        batcher = runtime.batcher = MicroBatcher(
            runtime, max_batch_rows=2, max_batch_delay_ms=0, max_queue_rows=4
        )
        big = asyncio.ensure_future(batcher.submit(rows(40, 0)))  # windows of 2
        runtime.steps.release()
        await until(lambda: len(runtime.runs) == 1)
        await asyncio.sleep(0.01)  # its second window runs, held
        await batcher.close()
        with pytest.raises(NotReady):
            await big
        assert runtime.runs == [2]

    asyncio.run(main())


def test_callers_that_leave_leave_no_unretrieved_exceptions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A cancelled caller's future is never failed later, so nothing is logged as 'never
    retrieved' when the batch it was in fails."""

    async def main() -> None:
        gate = asyncio.Event()

        class GatedFailing(FailingRuntime):
            async def infer(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
                self.entered.set()
                await gate.wait()
                return await super().infer(feeds)

        runtime = GatedFailing()
        batcher = MicroBatcher(runtime, max_batch_rows=2, max_batch_delay_ms=0, max_queue_rows=16)
        callers = [asyncio.ensure_future(batcher.submit(rows(n, 0))) for n in (6, 1, 40)]
        await until(runtime.entered.is_set)
        for caller in callers:
            caller.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        results = await asyncio.gather(*callers, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        with pytest.raises(RuntimeError):  # the next batch fails, and its caller hears it
            await batcher.submit(rows(3, 0))
        await batcher.close()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(main())
        gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
