"""KServe v2 (Open Inference Protocol) over the scoring core: plain dataclasses in and out.

The gRPC servicer (service/kserve_grpc.py) and the REST server are thin front ends over this;
no protobuf or HTTP here, except ModelConfig, which is Triton's own message.

A scoring model (its manifest's scorer graph) takes one input, named and shaped as the
manifest's scorer input ("input", FP32 [-1, F]; FP64 is accepted and converted, other
datatypes are INVALID_ARGUMENT), and answers through ScoringCore.score, the same path and batches
as latentwatch.v1 Score:
- outputs `score` (the `score_kind` parameter's kind, or the model's default), one output per
  score kind named by it (`neg_elbo`, `recon_error`, ...), `p_value`, `outlier_probability`
  (FP64, [N]), `is_outlier` (BOOL, [N]); with the `fdr` parameter also `fdr_is_outlier` (BOOL)
  and the response parameters `fdr_p_value_threshold` and `fdr_n_flagged`; and, on request,
  `latent_mu` and `latent_logvar` (FP32, [N, Z]; ScoringCore.encode on the same version).
  With no output requested: score, p_value, outlier_probability, is_outlier.
- parameters `alpha` (number), `score_kind` (string), `fdr` (number); Triton's scheduling
  parameters (PASSED_THROUGH) are accepted and ignored; any other is INVALID_ARGUMENT.
- response parameters: `score_kind` and `alpha` as used.
A translator model (pix2pix) takes its translator graph's input and answers its output through
ScoringCore.translate. A generator model cannot be inferred here (Generate draws its own latents;
decoding given latents has no core call yet): INVALID_ARGUMENT saying so.

Statistics are counted here, so REST and gRPC both count: per version, rows (inference_count),
requests (execution_count: one per request, since batches form in the batcher across requests),
successes and failures with their total nanoseconds, and the last inference's time.
The request, response and metadata dataclasses live in service/kserve_types.py.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray
from tritonclient.grpc import model_config_pb2 as mc

import latentwatch
from latentwatch.errors import InvalidInput, LatentwatchError, ModelNotFound, NotReady, quote
from latentwatch.families import family
from latentwatch.repository.catalog import TensorInfo as TensorMeta  # name, datatype, shape
from latentwatch.repository.manifest import Manifest, TensorSpec
from latentwatch.service.auth import caller_may_see
from latentwatch.service.core import ScoringCore
from latentwatch.service.kserve_types import (
    IndexEntry,
    ModelMetadata,
    ModelStats,
    Param,
    ServerMetadata,
    V2Request,
    V2Response,
    V2Tensor,
)
from latentwatch.service.repository import ModelVersion
from latentwatch.service.runtime import CUDA
from latentwatch.wire.v2_tensors import datatype_of

SERVER_NAME = "latentwatch"
EXTENSIONS = ("model_repository", "statistics", "binary_tensor_data")
PLATFORM_PREFIX = "latentwatch_"  # + the model kind: "latentwatch_vae"
DEFAULT_OUTPUTS = ("score", "p_value", "outlier_probability", "is_outlier")
LATENT_OUTPUTS = ("latent_mu", "latent_logvar")
# Triton's own request parameters, passed through by its clients: accepted, not used.
PASSED_THROUGH = frozenset({
    "sequence_id", "sequence_start", "sequence_end", "priority", "timeout",
    "binary_data_output",  # REST: how outputs travel, read by the REST front end
})
PARAMETERS = ("alpha", "score_kind", "fdr")
READY, UNAVAILABLE = "READY", "UNAVAILABLE"
# Per core: (model, version) -> its statistics.
_STATS: weakref.WeakKeyDictionary[ScoringCore, dict[tuple[str, str], ModelStats]] = (
    weakref.WeakKeyDictionary()
)
_Config = TypeVar("_Config", mc.ModelInput, mc.ModelOutput)


class KServe:
    """KServe v2 calls over one ScoringCore; errors are LatentwatchError classes."""

    def __init__(self, core: ScoringCore) -> None:
        self._core = core
        # Shared by every KServe over this core (the gRPC and the REST front end).
        self._stats = _STATS.setdefault(core, {})
        self._outputs: dict[tuple[str, str], tuple[Manifest, frozenset[str]]] = {}

    def server_live(self) -> bool:
        return True

    def server_ready(self) -> bool:
        return self._core.ready

    def model_ready(self, name: str, version: str = "") -> bool:
        """Whether the version (or the latest) serves; False, not an error, for unknown ones."""
        if not self._core.ready:
            return False
        try:
            self._version(name, version)
        except (ModelNotFound, InvalidInput):
            return False
        return True

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, latentwatch.__version__, EXTENSIONS)

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        mv = self._version(name, version)
        assert self._core.repository is not None  # _version checked
        versions = tuple(self._core.repository.versions[mv.name])
        return ModelMetadata(
            mv.name, versions if not version else (mv.version,),
            PLATFORM_PREFIX + mv.manifest.model_kind, inputs_of(mv), outputs_of(mv),
        )

    def model_config(self, name: str, version: str = "") -> mc.ModelConfig:
        """The configuration Triton would report for the model as this server serves it: the
        KServe inputs and outputs above (not the ONNX graph's), per-row tensors as dims [1]
        reshaped to [] as Triton declares them, batching up to the request row limit, the
        versions loaded, and the manifest's scoring facts as parameters."""
        mv = self._version(name, version)
        assert self._core.repository is not None  # _version checked
        config = mc.ModelConfig(
            name=mv.name, platform=PLATFORM_PREFIX + mv.manifest.model_kind,
            backend=SERVER_NAME, max_batch_size=mv.contract.max_request_rows,
            input=[_config_tensor(mc.ModelInput, t) for t in inputs_of(mv)],
            output=[_config_tensor(mc.ModelOutput, t) for t in outputs_of(mv)],
            dynamic_batching=mc.ModelDynamicBatching(),
        )
        config.version_policy.specific.versions.extend(
            int(v) for v in self._core.repository.versions[mv.name] if v.isdigit()
        )
        gpu = mv.provider == CUDA
        config.instance_group.add(
            count=1, kind=mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
        )
        scoring = mv.manifest.scoring
        facts: dict[str, object] = {"model_kind": mv.manifest.model_kind,
                                    "execution_provider": mv.provider}
        if scoring is not None:
            facts.update(score_kinds=",".join(scoring.score_kinds),
                         default_score_kind=scoring.default_score_kind,
                         default_alpha=scoring.calibration.default_alpha,
                         calibration_size=scoring.calibration.size)
        for key, value in facts.items():
            config.parameters[key].string_value = str(value)
        return config

    def repository_index(self, ready_only: bool = False) -> list[IndexEntry]:
        repository = self._core.repository
        if repository is None:
            return []
        entries = [
            IndexEntry(name, v, READY, "")
            for name, versions in repository.versions.items() for v in versions
        ]
        if not ready_only:
            entries += [IndexEntry(r.name, r.version, UNAVAILABLE, r.reason)
                        for r in repository.refused]
        return sorted((e for e in entries if caller_may_see(e.name)),
                      key=lambda e: (e.name, _version_key(e.version)))

    def model_statistics(self, name: str = "", version: str = "") -> list[ModelStats]:
        """Per loaded version; every model the caller may see when `name` is empty."""
        repository = self._core.repository
        if repository is None:
            return []
        if name:
            found = self._version(name, version)  # ModelNotFound for an unknown one
            wanted = [found] if version else list(repository.versions[name].values())
        else:
            wanted = [mv for versions in repository.versions.values()
                      for mv in versions.values() if caller_may_see(mv.name)]
        return [self._stats_of(mv.name, mv.version) for mv in wanted]

    async def infer(self, request: V2Request) -> V2Response:
        start = time.perf_counter_ns()
        mv = self._version(request.model, request.version)
        stats = self._stats_of(mv.name, mv.version)
        try:
            if mv.scoring_parts is not None:
                response = await self._score(request, mv)
            else:
                response = await self._translate(request, mv)
        except LatentwatchError:
            stats.fail_count += 1
            stats.fail_ns += time.perf_counter_ns() - start
            raise
        stats.success_count += 1
        stats.success_ns += time.perf_counter_ns() - start
        stats.execution_count += 1
        stats.inference_count += int(response.outputs[0].shape[0]) if response.outputs else 0
        stats.last_inference_ms = time.time_ns() // 1_000_000
        return response

    async def _score(self, request: V2Request, mv: ModelVersion) -> V2Response:
        spec = mv.manifest.graphs["scorer"].inputs[0]
        rows = the_input(request, spec)
        alpha, score_kind, fdr = score_parameters(request.parameters)
        wanted = request.outputs or DEFAULT_OUTPUTS
        known = self._output_names(mv)
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise InvalidInput(
                f"outputs: {', '.join(quote(n) for n in unknown)} not known; model "
                f"{quote(mv.name)} has {sorted(known)}"
            )
        if "fdr_is_outlier" in wanted and fdr is None:
            raise InvalidInput("outputs: fdr_is_outlier needs the fdr parameter")
        kinds = [n for n in wanted if n in mv.pipeline.kinds]
        result = await self._core.score(
            mv.name, mv.version, rows, kinds=kinds, alpha=alpha, fdr=fdr, score_kind=score_kind
        )
        columns: dict[str, NDArray] = {
            "score": result.score, "p_value": result.p_value,
            "outlier_probability": result.outlier_probability, "is_outlier": result.is_outlier,
            **result.scores,
        }
        params: dict[str, Param] = {"score_kind": result.score_kind, "alpha": result.alpha}
        if result.fdr is not None:
            columns["fdr_is_outlier"] = result.fdr.is_outlier
            params.update(fdr=result.fdr.level, fdr_n_flagged=result.fdr.n_flagged,
                          fdr_p_value_threshold=result.fdr.p_value_threshold)
        if any(n in LATENT_OUTPUTS for n in wanted):
            encoded = await self._core.encode(mv.name, mv.version, rows)
            columns["latent_mu"] = encoded.latent_mu
            if encoded.latent_logvar is not None:
                columns["latent_logvar"] = encoded.latent_logvar
        outputs = tuple(_tensor(n, columns[n]) for n in wanted)
        return V2Response(mv.name, mv.version, request.id, outputs, params)

    async def _translate(self, request: V2Request, mv: ModelVersion) -> V2Response:
        graph = mv.manifest.graphs.get("translator")
        if graph is None:
            raise InvalidInput(
                f"model {quote(mv.name)} ({mv.manifest.model_kind}) generates from latents it "
                "draws itself; use latentwatch.v1 Generate for it"
            )
        score_parameters(request.parameters, allowed=())
        images = the_input(request, graph.inputs[0])
        result = await self._core.translate(mv.name, mv.version, images)
        name = graph.outputs[0].name
        if request.outputs and request.outputs != (name,):
            raise InvalidInput(f"outputs: model {quote(mv.name)} has one output, {quote(name)}")
        return V2Response(mv.name, mv.version, request.id, (_tensor(name, result.output),), {})

    def _version(self, name: str, version: str) -> ModelVersion:
        """The loaded version; NotReady before the first load, ModelNotFound for unknown."""
        repository = self._core.repository
        if repository is None:
            raise NotReady("not ready: models are still loading")
        return repository.get(name, version)

    def _stats_of(self, name: str, version: str) -> ModelStats:
        stats = self._stats.get((name, version))
        if stats is None:
            stats = self._stats[(name, version)] = ModelStats(name, version)
        return stats

    def _output_names(self, mv: ModelVersion) -> frozenset[str]:
        """outputs_of's names, kept per loaded version (a reload brings a new manifest)."""
        cached = self._outputs.get((mv.name, mv.version))
        if cached is None or cached[0] is not mv.manifest:
            cached = self._outputs[(mv.name, mv.version)] = (
                mv.manifest, frozenset(t.name for t in outputs_of(mv)))
        return cached[1]


def inputs_of(mv: ModelVersion) -> tuple[TensorMeta, ...]:
    graph = mv.manifest.graphs["scorer" if mv.scoring_parts is not None else _served(mv)]
    return tuple(_meta(t) for t in graph.inputs)


def outputs_of(mv: ModelVersion) -> tuple[TensorMeta, ...]:
    """Every output the version can answer, in the order of DEFAULT_OUTPUTS, then kinds."""
    if mv.scoring_parts is None:
        return tuple(_meta(t) for t in mv.manifest.graphs[_served(mv)].outputs)
    per_row = [TensorMeta(n, "FP64", (-1,)) for n in ("score", "p_value", "outlier_probability")]
    per_row += [TensorMeta(n, "BOOL", (-1,)) for n in ("is_outlier", "fdr_is_outlier")]
    per_row += [TensorMeta(k, "FP64", (-1,)) for k in mv.pipeline.kinds]
    latent = mv.manifest.latent
    if latent is not None:
        names = LATENT_OUTPUTS if family(mv.manifest.model_kind).variational else LATENT_OUTPUTS[:1]
        per_row += [TensorMeta(n, "FP32", (-1, latent.latent_dim)) for n in names]
    return tuple(per_row)


def the_input(request: V2Request, spec: TensorSpec) -> NDArray:
    """The one input a model takes, FP32 (or FP64); InvalidInput naming what is wrong."""
    names = [t.name for t in request.inputs]
    others = [n for n in names if n != spec.name]
    if others or len(names) != 1:
        raise InvalidInput(
            f"inputs: {[quote(n) for n in names]}; model takes one input, {quote(spec.name)} "
            f"{spec.datatype} {spec.shape}"
        )
    tensor = request.inputs[0]
    if tensor.datatype not in ("FP32", "FP64") or tensor.datatype != datatype_of(tensor.data):
        raise InvalidInput(
            f"{spec.name}: datatype {quote(tensor.datatype)}; expected FP32 (FP64 accepted)"
        )
    return tensor.data


def score_parameters(
    parameters: Mapping[str, Param], allowed: tuple[str, ...] = PARAMETERS
) -> tuple[float | None, str | None, float | None]:
    """(alpha, score_kind, fdr) from request parameters; InvalidInput names unknown ones."""
    unknown = sorted(k for k in parameters if k not in allowed and k not in PASSED_THROUGH)
    if unknown:
        raise InvalidInput(
            f"parameters: {', '.join(quote(k) for k in unknown)} not known; this model takes "
            f"{list(allowed) or 'none'}"
        )

    def number(key: str) -> float | None:
        value = parameters.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"parameters: {key} is {quote(value)}; expected a number")
        return float(value)

    kind = parameters.get("score_kind")
    if kind is not None and not isinstance(kind, str):
        raise InvalidInput(f"parameters: score_kind is {quote(kind)}; expected a string")
    return number("alpha"), kind or None, number("fdr")


def _served(mv: ModelVersion) -> str:
    return next(g for g in ("generator", "translator") if g in mv.manifest.graphs)


def _config_tensor(kind: type[_Config], tensor: TensorMeta) -> _Config:
    """A config input or output: dims without the batch axis; a per-row scalar as [1]
    reshaped to [] (Triton wants a dimension besides the batch)."""
    datatype = "TYPE_STRING" if tensor.datatype == "BYTES" else f"TYPE_{tensor.datatype}"
    item = kind(name=tensor.name, data_type=mc.DataType.Value(datatype))
    dims = tensor.shape[1:]
    item.dims.extend(dims or (1,))
    if not dims:
        item.reshape.SetInParent()
    return item


def _meta(tensor: TensorSpec) -> TensorMeta:
    return TensorMeta(tensor.name, tensor.datatype, tuple(tensor.shape))


def _tensor(name: str, array: NDArray) -> V2Tensor:
    array = np.asarray(array)
    return V2Tensor(name, datatype_of(array), tuple(array.shape), array)


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)
