"""The transport-agnostic scoring core: arrays in, plain dataclasses out.

The gRPC servicer is a thin adapter over this; a REST or in-process front end could be another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from latentwatch.catalog import ModelInfo, ModelSummary, TensorInfo
from latentwatch.errors import NotReady
from latentwatch.service.repository import P_VALUE, ModelRepository, ModelVersion
from latentwatch.service.scoring import (
    benjamini_hochberg,
    check_alpha,
    check_fdr,
    p_values,
    resolve_kinds,
    resolve_score_kind,
    validate_rows,
)


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


class ScoringCore:
    """Serves a ModelRepository once it is ready; until then scoring raises NotReady."""

    def __init__(self, max_batch_rows: int) -> None:
        self._max_batch_rows = max_batch_rows
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
