"""The transport-agnostic scoring core: arrays in, plain dataclasses out.

The gRPC servicer is a thin adapter over this; a REST or in-process front end could be another.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.options import BiasOptions
from latentwatch.errors import InvalidInput, NotReady, quote
from latentwatch.repository.catalog import ModelInfo, ModelSummary, TensorInfo
from latentwatch.repository.manifest_groups import calibration_groups
from latentwatch.scoring.conformal import benjamini_hochberg, check_alpha, check_fdr
from latentwatch.scoring.contract import check_finite_scores, validate_rows
from latentwatch.scoring.mondrian import request_groups
from latentwatch.scoring.results import FdrResult as FdrResult  # the one result family
from latentwatch.scoring.results import ScoreResult
from latentwatch.service import bias, explanations, generation
from latentwatch.service.bias import BiasChunk, BiasResult
from latentwatch.service.generation import (
    GenerateArgs,
    GenerateResult,
    TranslateResult,
    TraverseArgs,
    TraverseResult,
)
from latentwatch.service.reload import ReloadReport, RepositoryWatcher
from latentwatch.service.repository import ModelRepository, ModelVersion
from latentwatch.service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeResult:
    model_name: str
    model_version: str
    latent_mu: NDArray[np.float32]  # (N, Z)
    latent_logvar: NDArray[np.float32] | None  # (N, Z); None for plain autoencoders


class ScoringCore:
    """Serves a ModelRepository once it is ready; until then scoring raises NotReady."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._max_batch_rows = settings.max_batch_rows
        self._bias_limits = bias.BiasLimits.from_settings(settings)
        self._bias_slots = bias.ReportSlots(settings.max_concurrent_bias_reports)
        self._repository: ModelRepository | None = None
        self._not_ready = "models are still loading"
        self.watcher: RepositoryWatcher | None = None  # hot reload, set once serving

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
        explain: bool = False,
        explain_top_k: int = 0,
        groups: Sequence[str] = (),
    ) -> ScoreResult:
        """Scores rows; with `explain`, each row's top features too (service/explanations.py),
        `explain_top_k` of them (0: the default)."""
        with self._serving(name, version).lease() as mv:
            top_k = explanations.explain_k(mv, explain_top_k) if explain else 0
            return await self._score(mv, array, kinds, alpha, fdr, score_kind, top_k, groups)

    async def _score(
        self,
        mv: ModelVersion,
        array: NDArray,
        kinds: Sequence[str],
        alpha: float | None,
        fdr: float | None,
        score_kind: str | None,
        explain_top_k: int = 0,
        groups: Sequence[str] = (),
    ) -> ScoreResult:
        pipeline = mv.pipeline
        calibration = mv.manifest.require_scoring().calibration
        kind = pipeline.resolve_score_kind(score_kind)
        extra = pipeline.resolve_kinds(kinds)
        alpha = check_alpha(
            calibration.default_alpha if alpha is None else alpha, calibration.size
        )
        level = None if fdr is None else check_fdr(fdr)
        rows = validate_rows(array, mv.contract)  # (N, F) float32
        grouped, alpha = request_groups(
            groups, rows.shape[0], pipeline.group_calibration, alpha,
            f"model {quote(mv.name)} version {quote(mv.version)}" if groups else "",
        )
        part = await mv.scorer.submit(rows)  # the scorer's outputs for these rows
        scores, p = await mv.scoring.score(part, extra, kind)
        check_finite_scores(scores)  # the safety net: no NaN or inf leaves the service
        if grouped is not None:  # Mondrian: each row against its group's calibration
            p = grouped.p_values(kind, scores[kind])
        is_outlier = p <= alpha
        explained = await explanations.explain_rows(mv, part, explain_top_k) if (
            explain_top_k) else None
        mv.metrics.observe_outliers(kind, p, calibration.default_alpha, alpha)
        mv.metrics.observe_served(p, calibration.size if grouped is None
                                  else grouped.calibration_sizes)
        return ScoreResult(
            model_name=mv.name,
            model_version=mv.version,
            score_kind=kind,
            alpha=alpha,
            score=scores[kind],
            p_value=p,
            outlier_probability=1.0 - p,
            is_outlier=is_outlier,
            scores={k: scores[k] for k in extra},
            fdr=None if level is None else benjamini_hochberg(p, level),
            explanations=explained,
            group_conditional=grouped is not None,
        )

    async def encode(self, name: str, version: str, array: NDArray) -> EncodeResult:
        with self._serving(name, version).lease() as mv:
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
    ) -> BiasResult:
        """The BiasReport flow on a serving version (service/bias.py), in one of the
        `max_concurrent_bias_reports` slots (RESOURCE_EXHAUSTED when none is free)."""
        with self._serving(name, version).lease() as mv, self._bias_slots.taken():
            mv.encoder  # noqa: B018  InvalidInput, naming its capabilities, for a generator
            return await bias.bias_report(mv, chunks, options, self._bias_limits)

    async def generate(self, name: str, version: str, args: GenerateArgs) -> GenerateResult:
        """Samples from the version's generator or decoder (service/generation.py)."""
        with self._serving(name, version).lease() as mv:
            return await generation.generate(mv, args)

    async def traverse(self, name: str, version: str, args: TraverseArgs) -> TraverseResult:
        """A latent sweep, decoded, and how much each dimension changes the output."""
        with self._serving(name, version).lease() as mv:
            return await generation.traverse(mv, args)

    async def translate(self, name: str, version: str, array: NDArray) -> TranslateResult:
        """Images through the version's translator graph (pix2pix)."""
        with self._serving(name, version).lease() as mv:
            return await generation.translate(mv, array)

    async def model_control(self, action: str, name: str = "", version: str = "") -> ReloadReport:
        """Hot reload on request: "reload" (the repository, or one model), "load" or "unload"
        a model or one version (service/reload.py)."""
        if self.watcher is None:
            raise NotReady("not ready: model control starts once the first load has finished")
        if action == "reload":
            return await self.watcher.reload(name or None)
        if action == "load":
            return await self.watcher.load(name, version)
        if action == "unload":
            return await self.watcher.unload(name, version)
        raise InvalidInput(f"action {quote(action)} is not one of reload, load, unload")

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
        # The graph a caller sends rows to: the scorer, else the generator or translator.
        served = next(m.graphs[g] for g in ("scorer", "generator", "translator") if g in m.graphs)
        scoring = m.scoring
        n = scoring.calibration.size if scoring is not None else 0
        latent_dim = (m.latent.latent_dim if m.latent is not None
                      else m.generation.latent_dim if m.generation is not None else 0)
        return ModelInfo(
            name=mv.name,
            version=mv.version,
            model_kind=m.model_kind,
            inputs=tuple(TensorInfo(t.name, t.datatype, tuple(t.shape)) for t in served.inputs),
            outputs=tuple(TensorInfo(t.name, t.datatype, tuple(t.shape)) for t in served.outputs),
            image_shape=tuple(m.input.image_shape or ()),
            score_kinds=tuple(scoring.score_kinds) if scoring is not None else (),
            default_score_kind=scoring.default_score_kind if scoring is not None else "",
            calibration_size=n,
            default_alpha=scoring.calibration.default_alpha if scoring is not None else 0.0,
            min_alpha=1.0 / (n + 1) if scoring is not None else 0.0,
            latent_dim=latent_dim,
            execution_provider=mv.provider,
            manifest_json=mv.manifest_json,
            max_batch_rows=self._max_batch_rows,
            explains=explanations.can_explain(mv),
            **calibration_groups(m),
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

