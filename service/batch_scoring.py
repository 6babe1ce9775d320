"""The scoring pipeline over the scorer's batches: each kind and p-value once per batch.

Callers of one batch share its work, as when it ran in the batch worker: the first caller that
needs a kind computes it for the whole batch (in the batch's memo) and the others slice it. Cheap
numpy runs on the event loop; costly work (the second stage's kNN searches, big batches) runs in
the executor. The default kind's scores and p-values go into the version's histograms once per
batch, always from the event loop (their one writer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from latentwatch.scoring.pipeline import ScoringPipeline
from latentwatch.service.batcher import Batch, BatchSlice
from latentwatch.service.metrics import VersionMetrics

# Batches up to this many rows are scored on the event loop (unless the kinds are costly).
INLINE_ROWS = 1024
_MEMO_KEY = "scoring"


@dataclass(eq=False)
class _Scored:
    """What callers of one batch have computed so far, whole-batch arrays."""

    scores: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    p_values: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    pending: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    observed: bool = False


class BatchScoring:
    def __init__(
        self, pipeline: ScoringPipeline, metrics: VersionMetrics, executor: Executor | None = None
    ) -> None:
        self._pipeline = pipeline
        self._metrics = metrics
        self._executor = executor
        default = pipeline.default_kind
        # A graph kind costs nothing extra: the histograms see it on every batch, as before.
        self._always = (default,) if default in pipeline.graph_kinds else ()

    async def score(
        self, part: BatchSlice, kinds: Sequence[str], p_kind: str
    ) -> tuple[dict[str, NDArray[np.float64]], NDArray[np.float64]]:
        """(kind -> (n,) scores for `kinds` and `p_kind`, (n,) p-values of `p_kind`) for the
        caller's rows of its batch."""
        batch = part.batch
        state: _Scored = batch.memo.setdefault(_MEMO_KEY, _Scored())
        wanted = tuple(dict.fromkeys((*kinds, p_kind, *self._always)))
        missing = [k for k in wanted if k not in state.scores and k not in state.pending]
        if missing:
            await self._compute(batch, state, missing)
        waiting = {id(f): f for k in wanted if (f := state.pending.get(k)) is not None}
        for future in waiting.values():
            await asyncio.shield(future)
        p = state.p_values.get(p_kind)
        if p is None:
            p = state.p_values[p_kind] = self._pipeline.p_values(p_kind, state.scores[p_kind])
        start, stop = part.start, part.stop
        scores = {k: state.scores[k][start:stop] for k in dict.fromkeys((*kinds, p_kind))}
        return scores, p[start:stop]

    async def _compute(self, batch: Batch, state: _Scored, kinds: list[str]) -> None:
        pipeline = self._pipeline
        if batch.rows.shape[0] <= INLINE_ROWS and not pipeline.costly(kinds):
            state.scores.update(pipeline.scores(batch.outputs, batch.rows, kinds))
            self._observe(state)
            return
        loop = asyncio.get_running_loop()
        done = asyncio.ensure_future(
            self._compute_off_loop(loop, batch, state, kinds), loop=loop
        )
        for kind in kinds:
            state.pending[kind] = done

    async def _compute_off_loop(
        self, loop: asyncio.AbstractEventLoop, batch: Batch, state: _Scored, kinds: list[str]
    ) -> None:
        try:
            scores = await loop.run_in_executor(
                self._executor, self._pipeline.scores, batch.outputs, batch.rows, kinds
            )
        finally:
            for kind in kinds:
                state.pending.pop(kind, None)
        state.scores.update(scores)
        self._observe(state)

    def _observe(self, state: _Scored) -> None:
        """The default kind's histograms, once per batch, when the batch has computed it."""
        kind = self._pipeline.default_kind
        if state.observed or kind not in state.scores:
            return
        state.observed = True
        scores = state.scores[kind]
        p = state.p_values.get(kind)
        if p is None:
            p = state.p_values[kind] = self._pipeline.p_values(kind, scores)
        self._metrics.score.observe_many(scores)
        self._metrics.p_value.observe_many(p)
