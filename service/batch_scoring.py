"""The scoring pipeline over the scorer's batches: each kind and p-value once per batch.

Callers of one batch share its work, as when it ran in the batch worker: the first caller that
needs a kind computes it for the whole batch (in the batch's memo) and the others slice it. Cheap
numpy runs on the event loop; costly work (the second stage's kNN searches, big batches) runs in
the executor. Each kind's scores go into the version's histograms once per batch when the batch
computes them, and each kind's p-values when it computes those (the default kind's always, with
its scores), always from the event loop (their one writer).
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
        p = self._p_values(state, p_kind)
        start, stop = part.start, part.stop
        scores = {k: state.scores[k][start:stop] for k in dict.fromkeys((*kinds, p_kind))}
        return scores, p[start:stop]

    async def _compute(self, batch: Batch, state: _Scored, kinds: list[str]) -> None:
        pipeline = self._pipeline
        if batch.rows.shape[0] <= INLINE_ROWS and not pipeline.costly(kinds):
            self._add(state, pipeline.scores(batch.outputs, batch.rows, kinds))
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
        self._add(state, scores)

    def _add(self, state: _Scored, scores: dict[str, NDArray[np.float64]]) -> None:
        """Newly computed kinds (never computed before for this batch) into the memo and the
        score histograms; the default kind's p-values with them."""
        state.scores.update(scores)
        for kind, values in scores.items():
            self._metrics.observe_scores(kind, values)
        if self._pipeline.default_kind in scores:
            self._p_values(state, self._pipeline.default_kind)

    def _p_values(self, state: _Scored, kind: str) -> NDArray[np.float64]:
        """`kind`'s whole-batch p-values, computed and observed once per batch."""
        p = state.p_values.get(kind)
        if p is None:
            p = state.p_values[kind] = self._pipeline.p_values(kind, state.scores[kind])
            self._metrics.observe_p_values(kind, p)
        return p
