"""MicroBatcher with fake runtimes: routing, flushing, back-pressure and failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

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
