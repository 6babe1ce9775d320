"""Scoring after the batcher: each caller gets the pipeline's numbers for its own rows, and the
default kind's histograms see each batch once, on the event loop or off it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest
from numpy.typing import NDArray

from latentwatch.scoring.pipeline import ScoringPipeline
from latentwatch.scoring.preprocessing import Preprocessing
from latentwatch.scoring.second_stage import KIND as STAGE_KIND
from latentwatch.scoring.second_stage import SecondStage
from latentwatch.service.batch_scoring import CHUNK_ROWS, BatchScoring
from latentwatch.service.batcher import Batch, BatchSlice, MicroBatcher
from latentwatch.service.metrics import VersionMetrics
from latentwatch.service.runtime import TensorSpec

F = 3


class ScoreRuntime:
    """A fake scorer: neg_elbo = row sum, recon_error = row max (+1), kl = first value."""

    inputs = (TensorSpec("input", "FP32", ("batch", F)),)
    outputs = tuple(TensorSpec(n, "FP32", ("batch",)) for n in ("neg_elbo", "recon_error", "kl"))
    provider = "fake"
    batches_itself = False

    def __init__(self) -> None:
        self.runs: list[int] = []

    async def load(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def infer(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
        x = feeds["input"]
        self.runs.append(x.shape[0])
        return {"neg_elbo": x.sum(axis=1), "recon_error": np.abs(x).max(axis=1) + 1,
                "kl": x[:, 0].copy()}


def make_pipeline(statistics: tuple[str, ...], default: str) -> ScoringPipeline:
    rng = np.random.default_rng(0)
    stage = SecondStage(statistics, "max", 2, np.zeros(len(statistics)), np.ones(len(statistics)),
                        np.zeros((0, 0), np.float32), rng.normal(size=(20, F)).astype(np.float32))
    kinds = ("neg_elbo", "recon_error", "kl", STAGE_KIND)
    calibration = {k: np.sort(rng.normal(size=40)) for k in kinds}
    pre = Preprocessing(kind="standardize", shift=[0.5] * F, scale=[2.0] * F)
    return ScoringPipeline(kinds, pre, stage, calibration, default)


@pytest.mark.parametrize(
    ("statistics", "default"),
    [(("neg_elbo", "log_recon_error"), STAGE_KIND),  # cheap: on the event loop
     (("neg_elbo", "log_input_knn"), STAGE_KIND),  # kNN: in the executor
     (("neg_elbo", "log_input_knn"), "kl")],  # default kind from the graph
)
def test_callers_get_the_pipelines_numbers_and_histograms_see_each_row_once(
    statistics: tuple[str, ...], default: str
) -> None:
    pipeline = make_pipeline(statistics, default)
    metrics = VersionMetrics()
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(1 + i % 3, F)).astype(np.float32) for i in range(12)]
    asked = [(STAGE_KIND, ()), ("kl", (STAGE_KIND,)), ("neg_elbo", ("recon_error",))]

    async def main() -> list[tuple[dict[str, NDArray], NDArray]]:
        runtime = ScoreRuntime()
        batcher = MicroBatcher(runtime, max_batch_rows=8, max_batch_delay_ms=20)
        with ThreadPoolExecutor(2) as executor:
            scoring = BatchScoring(pipeline, metrics, executor)

            async def one(i: int, x: NDArray) -> tuple[dict[str, NDArray], NDArray]:
                kind, extra = asked[i % len(asked)]
                return await scoring.score(await batcher.submit(x), extra, kind)

            got = await asyncio.gather(*(one(i, x) for i, x in enumerate(inputs)))
        assert len(runtime.runs) < len(inputs)  # batched, so the memo is shared
        await batcher.close()
        return got

    results = asyncio.run(main())
    for i, (x, (scores, p)) in enumerate(zip(inputs, results, strict=True)):
        kind, extra = asked[i % len(asked)]
        outputs = asyncio.run(ScoreRuntime().infer({"input": x}))
        expected = pipeline.scores(outputs, x, [kind, *extra])
        assert list(scores) == list(dict.fromkeys([*extra, kind]))
        for k in expected:
            np.testing.assert_allclose(scores[k], expected[k], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(p, pipeline.p_values(kind, expected[kind]), atol=1e-12)
    # A graph default kind is counted on every batch, exactly once; the stage default only on
    # batches where some caller asked for it.
    n_rows = sum(len(x) for x in inputs)
    p_count = {k: int(h.counts.sum()) for k, h in metrics.p_value.items()}
    score_count = {k: int(h.counts.sum()) for k, h in metrics.score.items()}
    if default != STAGE_KIND:
        assert p_count[default] == score_count[default] == n_rows
    else:
        assert 0 < p_count[default] <= n_rows
        assert score_count[default] == p_count[default]
    # Every kind a batch computed is in the histograms (labelled by kind), each row at most once;
    # p-values of the kinds callers asked p-values of (and the default kind's).
    assert set(score_count) == {default, STAGE_KIND, "kl", "neg_elbo", "recon_error"}
    assert set(p_count) == {default, STAGE_KIND, "kl", "neg_elbo"}
    assert all(0 < n <= n_rows for n in (*score_count.values(), *p_count.values()))
    for kind in p_count:
        assert p_count[kind] <= score_count[kind]


def knn_pipeline(pipeline_class: type[ScoringPipeline] = ScoringPipeline) -> ScoringPipeline:
    """A costly pipeline (kNN over 600 reference rows), default kind the stage's."""
    rng = np.random.default_rng(3)
    stage = SecondStage(("neg_elbo", "log_input_knn"), "max", 5, np.zeros(2), np.ones(2),
                        np.zeros((0, 0), np.float32), rng.normal(size=(600, F)).astype(np.float32))
    kinds = ("neg_elbo", "recon_error", "kl", STAGE_KIND)
    calibration = {k: np.sort(rng.normal(size=200)) for k in kinds}
    pre = Preprocessing(kind="standardize", shift=[0.5] * F, scale=[2.0] * F)
    return pipeline_class(kinds, pre, stage, calibration, STAGE_KIND)


def whole_batch(n: int) -> Batch:
    x = np.random.default_rng(4).normal(size=(n, F)).astype(np.float32)
    return Batch(x, asyncio.run(ScoreRuntime().infer({"input": x})))


def test_a_big_batch_scored_in_chunks_gets_the_numbers_of_one_call_over_it() -> None:
    pipeline = knn_pipeline()
    batch = whole_batch(2 * CHUNK_ROWS + 300)  # 3 chunks, the last one short

    async def main() -> tuple[dict[str, NDArray], NDArray]:
        with ThreadPoolExecutor(2) as executor:
            scoring = BatchScoring(pipeline, VersionMetrics(), executor)
            return await scoring.score(BatchSlice(batch, 0, len(batch.rows)), ("kl",), STAGE_KIND)

    scores, p = asyncio.run(main())
    expected = pipeline.scores(batch.outputs, batch.rows, ["kl", STAGE_KIND])
    for kind in ("kl", STAGE_KIND):
        np.testing.assert_array_equal(scores[kind], expected[kind])  # bit for bit
    np.testing.assert_array_equal(p, pipeline.p_values(STAGE_KIND, expected[STAGE_KIND]))


@dataclass(frozen=True, eq=False)
class HeldPipeline(ScoringPipeline):
    """Records the rows of every `scores` call; each call waits until `release` is set."""

    calls: list[int] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def scores(
        self, outputs: Mapping[str, NDArray], rows: NDArray[np.float32], kinds: Sequence[str]
    ) -> dict[str, NDArray[np.float64]]:
        self.calls.append(rows.shape[0])
        self.started.set()
        assert self.release.wait(10)
        return super().scores(outputs, rows, kinds)


def test_scoring_work_whose_callers_left_stops_before_its_next_chunk() -> None:
    pipeline = knn_pipeline(HeldPipeline)
    assert isinstance(pipeline, HeldPipeline)
    n = 8 * CHUNK_ROWS
    batch = whole_batch(n)
    metrics = VersionMetrics()

    async def main() -> tuple[dict[str, NDArray], NDArray]:
        with ThreadPoolExecutor(1) as executor:
            scoring = BatchScoring(pipeline, metrics, executor)
            part = BatchSlice(batch, 0, n)
            gone = asyncio.ensure_future(scoring.score(part, (), STAGE_KIND))
            while not pipeline.started.is_set():
                await asyncio.sleep(0.001)
            gone.cancel()
            await asyncio.sleep(0.01)
            pipeline.release.set()
            await asyncio.sleep(0.05)
            rows_computed = sum(pipeline.calls)
            assert rows_computed <= CHUNK_ROWS, pipeline.calls  # the chunk in progress only
            assert not metrics.score  # nothing half-done reached the histograms
            # A later caller of the batch computes it afresh, and whole.
            return await scoring.score(part, (), STAGE_KIND)

    scores, p = asyncio.run(main())
    expected = pipeline.scores(batch.outputs, batch.rows, [STAGE_KIND])[STAGE_KIND]
    np.testing.assert_array_equal(scores[STAGE_KIND], expected)
    assert int(metrics.p_value[STAGE_KIND].counts.sum()) == n


def test_a_caller_that_leaves_does_not_stop_work_another_caller_waits_for() -> None:
    pipeline = knn_pipeline(HeldPipeline)
    assert isinstance(pipeline, HeldPipeline)
    n = 3 * CHUNK_ROWS
    batch = whole_batch(n)

    async def main() -> tuple[dict[str, NDArray], NDArray]:
        with ThreadPoolExecutor(1) as executor:
            scoring = BatchScoring(pipeline, VersionMetrics(), executor)
            gone = asyncio.ensure_future(scoring.score(BatchSlice(batch, 0, 10), (), STAGE_KIND))
            kept = asyncio.ensure_future(scoring.score(BatchSlice(batch, 10, n), (), STAGE_KIND))
            while not pipeline.started.is_set():
                await asyncio.sleep(0.001)
            gone.cancel()
            pipeline.release.set()
            return await kept

    scores, p = asyncio.run(main())
    assert pipeline.calls == [CHUNK_ROWS] * 3  # once for both callers, in chunks
    expected = pipeline.scores(batch.outputs, batch.rows, [STAGE_KIND])[STAGE_KIND]
    np.testing.assert_array_equal(scores[STAGE_KIND], expected[10:])
