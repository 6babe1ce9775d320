"""The transport-agnostic scoring core: arrays in, plain dataclasses out.

The gRPC servicer is a thin adapter over this; a REST or in-process front end could be another.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.density import BiasAccumulator, BiasOptions, BiasReport
from latentwatch.errors import InvalidInput, NotReady, QueueFull
from latentwatch.repository.catalog import ModelInfo, ModelSummary, TensorInfo
from latentwatch.scoring.contract import (
    benjamini_hochberg,
    check_alpha,
    check_fdr,
    p_values,
    resolve_kinds,
    resolve_score_kind,
    validate_rows,
)
from latentwatch.service.batcher import Outputs
from latentwatch.service.repository import P_VALUE, ModelRepository, ModelVersion, decode

log = logging.getLogger(__name__)

# Chunks of one bias report encoding at once while the next ones are read. More would not
# encode faster (a batcher runs one batch at a time); these overlap reading with encoding.
BIAS_WINDOW_CHUNKS = 4
DEFAULT_N_DECODED = 8
# A bias report is a batch job: when the encoder queue is full it yields to interactive callers
# and retries (backing off from 1 ms to 50 ms) for this long before failing RESOURCE_EXHAUSTED.
BIAS_QUEUE_WAIT_S = 30.0


@dataclass(frozen=True)
class FdrResult:
    level: float
    is_outlier: NDArray[np.bool_]  # (N,) rejected by Benjamini-Hochberg
    n_flagged: int
    p_value_threshold: float  # largest flagged p-value; 0 when none


@dataclass(frozen=True)
class ScoreResult:
    model_name: str
    model_version: str
    score_kind: str  # the kind `score` holds
    alpha: float
    score: NDArray[np.float32]  # (N,)
    p_value: NDArray[np.float64]  # (N,)
    outlier_probability: NDArray[np.float64]  # (N,)
    is_outlier: NDArray[np.bool_]  # (N,)
    scores: dict[str, NDArray[np.float32]]  # requested kinds, each (N,)
    fdr: FdrResult | None


@dataclass(frozen=True)
class EncodeResult:
    model_name: str
    model_version: str
    latent_mu: NDArray[np.float32]  # (N, Z)
    latent_logvar: NDArray[np.float32] | None  # (N, Z); None for plain autoencoders


@dataclass(frozen=True)
class BiasChunk:
    """Rows of one BiasReport message, with their ids and group labels when given."""

    array: NDArray | None  # (n, ...) rows as sent, checked like Score's; None: no rows
    ids: Sequence[str] | None = None  # one per row
    groups: Mapping[str, Sequence[str]] | None = None  # column -> one label per row


@dataclass(frozen=True)
class BiasResult:
    model_name: str
    model_version: str
    report: BiasReport


class ScoringCore:
    """Serves a ModelRepository once it is ready; until then scoring raises NotReady."""

    def __init__(
        self, max_batch_rows: int, *, bias_max_rows: int = 2_000_000, max_queue_rows: int = 8192
    ) -> None:
        self._max_batch_rows = max_batch_rows
        self._bias_max_rows = bias_max_rows
        # A bias report keeps at most half an encoder queue in flight, so other callers of the
        # same batcher still get in; when others fill the queue, its chunks wait and retry.
        self._bias_window_rows = max(1, max_queue_rows // 2)
        self._repository: ModelRepository | None = None
        self._not_ready = "models are still loading"

    @property
    def ready(self) -> bool:
        return self._repository is not None and not self._not_ready

    @property
    def repository(self) -> ModelRepository | None:
        return self._repository

    def set_repository(self, repository: ModelRepository, not_ready_reason: str = "") -> None:
        """Makes the repository visible; scoring works only when `not_ready_reason` is empty."""
        self._repository = repository
        self._not_ready = not_ready_reason

    async def score(
        self,
        name: str,
        version: str,
        array: NDArray,
        kinds: Sequence[str] = (),
        alpha: float | None = None,
        fdr: float | None = None,
        score_kind: str | None = None,
    ) -> ScoreResult:
        mv = self._serving(name, version)
        m = mv.manifest
        kind = resolve_score_kind(score_kind, m.score_kinds, m.default_score_kind)
        extra = resolve_kinds(kinds, m.score_kinds)
        alpha = check_alpha(
            m.calibration.default_alpha if alpha is None else alpha, m.calibration.size
        )
        level = None if fdr is None else check_fdr(fdr)
        rows = validate_rows(array, mv.contract)  # (N, F) float32
        stage = m.second_stage
        needs_stage = stage is not None and (kind == stage.kind or stage.kind in extra)
        outputs = await mv.scorer.submit(rows, extra=needs_stage)
        # The batch holds the default kind's p-values when it computed that kind.
        p = outputs[P_VALUE] if kind == m.default_score_kind and P_VALUE in outputs else (
            p_values(mv.calibration[kind], outputs[kind])
        )
        is_outlier = p <= alpha
        mv.metrics.outliers += int(np.count_nonzero(is_outlier))
        fdr_result = None
        if level is not None:
            rejected, threshold = benjamini_hochberg(p, level)
            fdr_result = FdrResult(level, rejected, int(np.count_nonzero(rejected)), threshold)
        return ScoreResult(
            model_name=mv.name,
            model_version=mv.version,
            score_kind=kind,
            alpha=alpha,
            score=outputs[kind],
            p_value=p,
            outlier_probability=1.0 - p,
            is_outlier=is_outlier,
            scores={kind: outputs[kind] for kind in extra},
            fdr=fdr_result,
        )

    async def encode(self, name: str, version: str, array: NDArray) -> EncodeResult:
        mv = self._serving(name, version)
        rows = validate_rows(array, mv.contract)
        outputs = await mv.encoder.submit(rows)
        return EncodeResult(
            mv.name, mv.version, outputs["latent_mu"], outputs.get("latent_logvar")
        )

    async def bias_report(
        self,
        name: str,
        version: str,
        chunks: AsyncIterator[BiasChunk],
        options: BiasOptions | None = None,
        n_decoded: int | None = None,
    ) -> BiasResult:
        """Encodes every chunk's rows (in order), then builds the report (latentwatch.bias).

        `n_decoded` of the sparsest and densest rows are decoded at their latent means when the
        version has a decoder graph (default DEFAULT_N_DECODED, at most options.top_k).
        """
        mv = self._serving(name, version)
        options = (options or BiasOptions()).validated()
        if n_decoded is None:
            n_decoded = min(DEFAULT_N_DECODED, options.top_k)
        elif not 0 <= n_decoded <= options.top_k:
            raise InvalidInput(
                f"n_decoded: expected 0 to top_k ({options.top_k}) rows, got {n_decoded}"
            )
        accumulator = BiasAccumulator(mv.manifest.latent_dim, max_rows=self._bias_max_rows)
        means = await self._accumulate(mv, chunks, accumulator)
        if accumulator.n_rows == 0:
            raise InvalidInput("the stream carried no rows; send rows in the input of each chunk")
        # Histograms and group statistics over up to millions of rows: not on the event loop.
        report = await asyncio.to_thread(accumulator.finish, options, mv.reference)
        if n_decoded and mv.decoder is not None:
            k = min(n_decoded, report.sparsest.shape[0])
            positions = np.concatenate([report.sparsest[:k], report.densest[:k]])
            decoded = await asyncio.to_thread(
                decode, mv.decoder, mv.manifest, _rows_at(means, positions)
            )
            report = report.with_decoded(decoded[:k], decoded[k:])
        mv.metrics.observe_bias(report)
        log.info(
            "bias report on %s:%s: %d rows, effective sample size %.1f, drift %s",
            mv.name, mv.version, report.n_rows, report.effective_sample_size,
            "n/a" if report.drift is None else f"{report.drift.overall:.3f}",
        )
        return BiasResult(mv.name, mv.version, report)

    async def _accumulate(
        self, mv: ModelVersion, chunks: AsyncIterator[BiasChunk], accumulator: BiasAccumulator
    ) -> list[NDArray[np.float32]]:
        """Feeds the accumulator in input order; returns the means it holds, chunk by chunk
        (the same arrays, so keeping them costs no memory)."""
        window: deque[tuple[BiasChunk, int, asyncio.Future[Outputs]]] = deque()
        in_flight = received = 0
        means: list[NDArray[np.float32]] = []

        async def add_oldest() -> int:
            chunk, n, encoding = window.popleft()
            outputs = await encoding
            # A copy: the slice would keep the whole batch's output alive.
            mu = np.array(outputs["latent_mu"], dtype=np.float32)
            accumulator.add(mu, outputs.get("latent_logvar"), chunk.ids, chunk.groups)
            means.append(mu)
            return n

        try:
            async for index, chunk in _enumerate(chunks):
                what = f"chunk {index} input"
                if chunk.array is None:  # e.g. a first message with the options only
                    if chunk.ids or chunk.groups:
                        raise InvalidInput(f"{what}: missing, but the chunk has ids or groups")
                    continue
                rows = validate_rows(chunk.array, mv.contract, what=what)
                n = rows.shape[0]
                received += n
                if received > self._bias_max_rows:
                    raise InvalidInput(
                        f"a bias report takes at most {self._bias_max_rows:,} rows "
                        f"(LATENTWATCH_BIAS_MAX_ROWS); this stream sent more"
                    )
                while window and (
                    len(window) >= BIAS_WINDOW_CHUNKS or in_flight + n > self._bias_window_rows
                ):
                    in_flight -= await add_oldest()
                window.append((chunk, n, asyncio.ensure_future(_encode_patiently(mv, rows))))
                in_flight += n
            while window:
                await add_oldest()
        finally:
            for _, _, encoding in window:
                if encoding.done() and not encoding.cancelled():
                    encoding.exception()  # retrieved: the first error is the one reported
                else:
                    encoding.cancel()
        return means

    def list_models(self) -> list[ModelSummary]:
        summaries = []
        for name, versions in self._loaded().versions.items():
            latest = versions[next(reversed(versions))]
            summaries.append(
                ModelSummary(name, tuple(versions), latest.version, latest.manifest.model_kind)
            )
        return summaries

    def get_model(self, name: str, version: str = "") -> ModelInfo:
        mv = self._loaded().get(name, version)
        m = mv.manifest
        scorer = m.graphs["scorer"]
        n = m.calibration.size
        return ModelInfo(
            name=mv.name,
            version=mv.version,
            model_kind=m.model_kind,
            inputs=tuple(TensorInfo(t.name, t.datatype, tuple(t.shape)) for t in scorer.inputs),
            outputs=tuple(TensorInfo(t.name, t.datatype, tuple(t.shape)) for t in scorer.outputs),
            image_shape=tuple(m.input.image_shape or ()),
            score_kinds=tuple(m.score_kinds),
            default_score_kind=m.default_score_kind,
            calibration_size=n,
            default_alpha=m.calibration.default_alpha,
            min_alpha=1.0 / (n + 1),
            latent_dim=m.latent_dim,
            execution_provider=mv.provider,
            manifest_json=mv.manifest_json,
            max_batch_rows=self._max_batch_rows,
        )

    def _loaded(self) -> ModelRepository:
        if self._repository is None:
            raise NotReady(f"not ready: {self._not_ready}")
        return self._repository

    def _serving(self, name: str, version: str) -> ModelVersion:
        repository = self._loaded()
        if self._not_ready:
            raise NotReady(f"not ready: {self._not_ready}")
        return repository.get(name, version)


def _rows_at(blocks: Sequence[NDArray[np.float32]], positions: NDArray[np.int64]) -> NDArray:
    """Rows at global `positions` of row blocks stacked in order, without stacking them."""
    starts = np.cumsum([0] + [b.shape[0] for b in blocks])
    block = np.searchsorted(starts, positions, "right") - 1
    width = blocks[0].shape[1]
    out = np.empty((positions.shape[0], width), dtype=np.float32)  # (k, Z)
    for i, (b, p) in enumerate(zip(block, positions, strict=True)):
        out[i] = blocks[b][p - starts[b]]
    return out


async def _encode_patiently(mv: ModelVersion, rows: NDArray[np.float32]) -> Outputs:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + BIAS_QUEUE_WAIT_S
    pause_s = 0.001
    while True:
        try:
            return await mv.encoder.submit(rows)
        except QueueFull:
            if loop.time() + pause_s > give_up:
                raise
            await asyncio.sleep(pause_s)
            pause_s = min(2 * pause_s, 0.05)


async def _enumerate(items: AsyncIterator[BiasChunk]) -> AsyncIterator[tuple[int, BiasChunk]]:
    index = 0
    async for item in items:
        yield index, item
        index += 1
