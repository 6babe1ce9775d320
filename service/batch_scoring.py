"""The scoring pipeline over the scorer's batches: each kind and p-value once per batch.

Callers of one batch share its work, as when it ran in the batch worker: the first caller that
needs a kind computes it for the whole batch (in the batch's memo) and the others slice it. Cheap
numpy runs on the event loop; costly work (the second stage's kNN searches, big batches) runs in
the executor, CHUNK_ROWS rows at a time, with the p-values the callers need. Work belongs to the
callers waiting for it: when the last of them leaves (cancelled), it stops before its next chunk,
and a later caller of the batch computes it afresh. Each kind's scores go into the version's
histograms once per batch when the batch computes them, and each kind's p-values when it
computes those (the default kind's always, with its scores), always from the event loop (their
one writer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from latentwatch.scoring.pipeline import ScoringPipeline
from latentwatch.scoring.second_stage import KNN_CHUNK_ROWS
from latentwatch.service.batcher import Batch, BatchSlice
from latentwatch.service.metrics import VersionMetrics

# Batches up to this many rows are scored on the event loop (unless the kinds are costly).
INLINE_ROWS = 1024
# Rows per executor call: work nobody waits for stops within one chunk. A multiple of the kNN's
# chunk, so every row gets the numbers one call over the whole batch would give it.
CHUNK_ROWS = 2 * KNN_CHUNK_ROWS
_MEMO_KEY = "scoring"

Scores = dict[str, NDArray[np.float64]]


@dataclass(eq=False)
class _Job:
    """Kinds of one batch being computed off the event loop, and how many callers wait."""

    kinds: tuple[str, ...]
    task: asyncio.Task[None] = field(init=False)
    waiters: int = 0


@dataclass(eq=False)
class _Scored:
    """What callers of one batch have computed so far, whole-batch arrays."""

    scores: Scores = field(default_factory=dict)
    p_values: Scores = field(default_factory=dict)
    pending: dict[str, _Job] = field(default_factory=dict)


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
    ) -> tuple[Scores, NDArray[np.float64]]:
        """(kind -> (n,) scores for `kinds` and `p_kind`, (n,) p-values of `p_kind`) for the
        caller's rows of its batch."""
        batch = part.batch
        state: _Scored = batch.memo.setdefault(_MEMO_KEY, _Scored())
        wanted = tuple(dict.fromkeys((*kinds, p_kind, *self._always)))
        missing = [k for k in wanted if k not in state.scores and k not in state.pending]
        if missing:
            self._compute(batch, state, missing, p_kind)
        jobs = list({id(j): j for k in wanted if (j := state.pending.get(k)) is not None}.values())
        for job in jobs:
            job.waiters += 1
        try:
            for job in jobs:
                await asyncio.shield(job.task)
        finally:
            for job in jobs:
                job.waiters -= 1
                if job.waiters == 0 and not job.task.done():  # its callers all left
                    job.task.cancel()
                    self._release(state, job)
        p = self._p_values(state, p_kind)
        start, stop = part.start, part.stop
        scores = {k: state.scores[k][start:stop] for k in dict.fromkeys((*kinds, p_kind))}
        return scores, p[start:stop]

    def _compute(self, batch: Batch, state: _Scored, kinds: list[str], p_kind: str) -> None:
        pipeline = self._pipeline
        if batch.rows.shape[0] <= INLINE_ROWS and not pipeline.costly(kinds):
            self._add(state, pipeline.scores(batch.outputs, batch.rows, kinds), {})
            return
        # The p-values that would follow on the loop (a whole batch at once) come with the chunks.
        p_kinds = tuple(k for k in kinds if k in (pipeline.default_kind, p_kind))
        job = _Job(tuple(kinds))
        job.task = asyncio.ensure_future(self._compute_off_loop(batch, state, job, p_kinds))
        for kind in kinds:
            state.pending[kind] = job

    async def _compute_off_loop(
        self, batch: Batch, state: _Scored, job: _Job, p_kinds: tuple[str, ...]
    ) -> None:
        loop = asyncio.get_running_loop()
        n = batch.rows.shape[0]
        try:
            parts = [
                await loop.run_in_executor(
                    self._executor, self._score_rows, batch, start, min(start + CHUNK_ROWS, n),
                    job.kinds, p_kinds,
                )
                for start in range(0, n, CHUNK_ROWS)
            ]
        finally:
            self._release(state, job)
        self._add(state, _joined([s for s, _ in parts]), _joined([p for _, p in parts]))

    def _score_rows(
        self, batch: Batch, start: int, stop: int, kinds: Sequence[str], p_kinds: Sequence[str]
    ) -> tuple[Scores, Scores]:
        """Scores of `kinds` and p-values of `p_kinds` for rows [start, stop) (any thread)."""
        outputs = {name: values[start:stop] for name, values in batch.outputs.items()}
        scores = self._pipeline.scores(outputs, batch.rows[start:stop], kinds)
        return scores, {k: self._pipeline.p_values(k, scores[k]) for k in p_kinds}

    @staticmethod
    def _release(state: _Scored, job: _Job) -> None:
        """Kinds `job` no longer computes: the next caller that wants them starts anew."""
        for kind in job.kinds:
            if state.pending.get(kind) is job:
                del state.pending[kind]

    def _add(self, state: _Scored, scores: Scores, p_values: Mapping[str, NDArray]) -> None:
        """Newly computed kinds (never computed before for this batch) into the memo and the
        score histograms, with their p-values; the default kind's p-values with them."""
        state.scores.update(scores)
        for kind, values in scores.items():
            self._metrics.observe_scores(kind, values)
        for kind, p in p_values.items():
            state.p_values[kind] = p
            self._metrics.observe_p_values(kind, p)
        if self._pipeline.default_kind in scores:
            self._p_values(state, self._pipeline.default_kind)

    def _p_values(self, state: _Scored, kind: str) -> NDArray[np.float64]:
        """`kind`'s whole-batch p-values, computed and observed once per batch."""
        p = state.p_values.get(kind)
        if p is None:
            p = state.p_values[kind] = self._pipeline.p_values(kind, state.scores[kind])
            self._metrics.observe_p_values(kind, p)
        return p


def _joined(parts: list[Scores]) -> Scores:
    """Chunks' (b,) arrays, kind by kind, as (B,) arrays of the whole batch."""
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
