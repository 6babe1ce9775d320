"""ONNX Runtime's own thread for small runs (ort_async_max_rows): run_async, completed by
callback on the loop, gives the same outputs as a run in the executor; larger runs, and
sessions with one intra-op thread, still go through the executor; a failed run is an error of
that call, and a caller that leaves meanwhile leaves nothing behind on the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from repo_builder import reference_outputs
from server_harness import ServerThread, server_settings

from latentwatch.client.client import LatentwatchClient
from latentwatch.repository.layout import SCORER_FILE
from latentwatch.service.ort_runtime import OrtRuntime

ASYNC_MAX_ROWS = 8


class CountingExecutor(ThreadPoolExecutor):
    """An executor that counts what it is given: the runs that did not go to run_async."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.calls = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def executor() -> Iterator[CountingExecutor]:
    pool = CountingExecutor()
    yield pool
    pool.shutdown(wait=True)


def _scorer(repo: Path) -> Path:
    return repo / "img-vae" / "1" / SCORER_FILE


async def _loaded(path: Path, executor: CountingExecutor, threads: int) -> OrtRuntime:
    runtime = OrtRuntime(path, threads, executor, async_max_rows=ASYNC_MAX_ROWS)
    await runtime.load()
    executor.calls = 0  # the load itself ran in the executor
    return runtime


def test_small_runs_skip_the_executor_and_agree_with_it(
    synthetic_repo: Path, executor: CountingExecutor
) -> None:
    rows = np.random.default_rng(0).normal(size=(ASYNC_MAX_ROWS, 64)).astype(np.float32)

    async def main() -> tuple[dict, dict, dict]:
        runtime = await _loaded(_scorer(synthetic_repo), executor, threads=2)
        small = await runtime.infer({"input": rows})
        assert executor.calls == 0  # run_async, no executor round trip
        blocking = runtime.run({"input": rows})
        big = await runtime.infer({"input": np.concatenate([rows, rows])})
        assert executor.calls == 1  # more rows than async_max_rows: the executor
        return small, blocking, big

    small, blocking, big = asyncio.run(main())
    assert small.keys() == blocking.keys()
    for name in small:
        np.testing.assert_array_equal(small[name], blocking[name])
        np.testing.assert_array_equal(big[name][:ASYNC_MAX_ROWS], blocking[name])
    want = reference_outputs(rows, "vae", 4)["neg_elbo"]
    np.testing.assert_allclose(small["neg_elbo"], want, rtol=1e-5)


def test_one_intra_op_thread_keeps_the_executor(
    synthetic_repo: Path, executor: CountingExecutor
) -> None:
    """run_async needs a pool thread besides the caller's; with one thread there is none."""
    rows = np.ones((1, 64), dtype=np.float32)

    async def main() -> None:
        runtime = await _loaded(_scorer(synthetic_repo), executor, threads=1)
        await runtime.infer({"input": rows})
        assert executor.calls == 1

    asyncio.run(main())


def test_a_failed_small_run_raises_in_its_caller_and_the_next_one_runs(
    synthetic_repo: Path, executor: CountingExecutor
) -> None:
    async def main() -> None:
        runtime = await _loaded(_scorer(synthetic_repo), executor, threads=2)
        with pytest.raises(Exception, match=r"input|dimension|shape|Got"):
            await runtime.infer({"input": np.ones((2, 3), dtype=np.float32)})  # not 64 wide
        out = await runtime.infer({"input": np.ones((2, 64), dtype=np.float32)})
        np.testing.assert_allclose(out["neg_elbo"], [64.0, 64.0])

    asyncio.run(main())


def test_a_caller_that_leaves_during_a_small_run_leaves_the_loop_clean(
    synthetic_repo: Path, executor: CountingExecutor
) -> None:
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        runtime = await _loaded(_scorer(synthetic_repo), executor, threads=2)
        rows = np.ones((4, 64), dtype=np.float32)
        for _ in range(20):
            task = asyncio.ensure_future(runtime.infer({"input": rows}))
            await asyncio.sleep(0)
            task.cancel()
        await asyncio.sleep(0.2)  # the callbacks of the abandoned runs arrive meanwhile
        out = await runtime.infer({"input": rows})
        np.testing.assert_allclose(out["neg_elbo"], [64.0] * 4)

    asyncio.run(main())
    assert errors == []


def test_a_server_with_small_runs_on_ort_threads_scores_as_one_without(
    synthetic_repo: Path,
) -> None:
    rows = np.random.default_rng(1).normal(size=(3, 64)).astype(np.float32)
    scores = []
    for async_max_rows in (0, 64):
        server = ServerThread(server_settings(
            synthetic_repo, intra_op_threads=2, ort_async_max_rows=async_max_rows,
        ))
        try:
            with LatentwatchClient(f"127.0.0.1:{server.running.port}") as client:
                client.wait_ready(30)
                scores.append(client.score("img-vae", rows, kinds=["*"]))
        finally:
            server.close()
    plain, on_ort_thread = scores
    np.testing.assert_array_equal(plain.score, on_ort_thread.score)
    np.testing.assert_array_equal(plain.p_value, on_ort_thread.p_value)
    np.testing.assert_allclose(plain.score, reference_outputs(rows, "vae", 4)["score"], rtol=1e-5)
