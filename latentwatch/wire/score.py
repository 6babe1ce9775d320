"""Score, Encode and model description messages <-> domain values, both directions.

The servicer builds responses with the `*_response`/`*_message` functions; the client reads them
back with the `*_from_*` functions, so a field is written and read in one module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput, LatentwatchError
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.repository.catalog import ModelInfo, ModelSummary, TensorInfo
from latentwatch.scoring.explain import Explanations
from latentwatch.scoring.results import FdrResult, ScoreResult
from latentwatch.wire.tensors import from_tensor, to_tensor

if TYPE_CHECKING:  # an annotation only: the wire layer does not import the server
    from latentwatch.service.core import EncodeResult


def score_request(
    model: str,
    rows: NDArray,
    version: str,
    kinds: Sequence[str],
    alpha: float | None,
    fdr: float | None,
    score_kind: str,
    request_id: str = "",
    explain_top_k: int | None = None,
    groups: Sequence[str] = (),
) -> pb.ScoreRequest:
    """`explain_top_k`: None asks for no explanations, 0 for the server's default k."""
    request = pb.ScoreRequest(
        model_name=model,
        model_version=version,
        input=to_tensor(rows),
        score_kinds=list(kinds),
        request_id=request_id,
        score_kind=score_kind,
        explain=explain_top_k is not None,
        explain_top_k=explain_top_k or 0,
        groups=[str(g) for g in groups],
    )
    if alpha is not None:
        request.alpha = alpha
    if fdr is not None:
        request.fdr = fdr
    return request


def input_array(request: pb.ScoreRequest | pb.EncodeRequest) -> NDArray:
    if not request.HasField("input"):
        raise InvalidInput("input: missing; expected a tensor of rows, batch first")
    return from_tensor(request.input)


def score_response(result: ScoreResult, request_id: str) -> pb.ScoreResponse:
    response = pb.ScoreResponse(
        model_name=result.model_name,
        model_version=result.model_version,
        request_id=request_id,
        score_kind=result.score_kind,
        alpha=result.alpha,
        score=result.score.tolist(),
        p_value=result.p_value.tolist(),
        outlier_probability=result.outlier_probability.tolist(),
        is_outlier=result.is_outlier.tolist(),
        scores=[pb.ScoreColumn(kind=k, values=v.tolist()) for k, v in result.scores.items()],
        group_conditional=result.group_conditional,
    )
    if result.explanations is not None:
        response.explanations.extend(explanation_messages(result.explanations))
    if result.fdr is not None:
        response.fdr.CopyFrom(
            pb.FdrDecision(
                level=result.fdr.level,
                is_outlier=result.fdr.is_outlier.tolist(),
                n_flagged=result.fdr.n_flagged,
                p_value_threshold=result.fdr.p_value_threshold,
            )
        )
    return response


def result_from_response(response: pb.ScoreResponse, n_rows: int) -> ScoreResult:
    score = np.array(response.score, dtype=np.float64)
    if score.shape[0] != n_rows:
        raise LatentwatchError(f"server returned {score.shape[0]} scores for {n_rows} rows")
    fdr = None
    if response.HasField("fdr"):
        fdr = FdrResult(
            level=response.fdr.level,
            is_outlier=np.array(response.fdr.is_outlier, dtype=bool),
            n_flagged=int(response.fdr.n_flagged),
            p_value_threshold=response.fdr.p_value_threshold,
        )
    return ScoreResult(
        model_name=response.model_name,
        model_version=response.model_version,
        score_kind=response.score_kind,
        alpha=response.alpha,
        score=score,
        p_value=np.array(response.p_value, dtype=np.float64),
        outlier_probability=np.array(response.outlier_probability, dtype=np.float64),
        is_outlier=np.array(response.is_outlier, dtype=bool),
        scores={c.kind: np.array(c.values, dtype=np.float64) for c in response.scores},
        fdr=fdr,
        explanations=explanations_from_messages(response.explanations, n_rows),
        group_conditional=response.group_conditional,
    )


def explanation_messages(explained: Explanations) -> list[pb.Explanation]:
    return [
        pb.Explanation(features=f, names=n, contributions=c)
        for f, n, c in zip(explained.features.tolist(), explained.names,
                           explained.contributions.tolist(), strict=True)
    ]


def explanations_from_messages(
    messages: Sequence[pb.Explanation], n_rows: int
) -> Explanations | None:
    """None when the response has none; LatentwatchError when they do not fit the rows."""
    if not messages:
        return None
    widths = {len(m.features) for m in messages} | {len(m.contributions) for m in messages}
    if len(messages) != n_rows or len(widths) != 1 or any(
        len(m.names) != len(m.features) for m in messages
    ):
        raise LatentwatchError(f"server returned {len(messages)} explanations of uneven widths "
                               f"{sorted(widths)} for {n_rows} rows")
    return Explanations(
        features=np.array([list(m.features) for m in messages], dtype=np.int64),
        contributions=np.array([list(m.contributions) for m in messages], dtype=np.float64),
        names=tuple(tuple(m.names) for m in messages),
    )


def encode_response(result: EncodeResult) -> pb.EncodeResponse:
    response = pb.EncodeResponse(
        model_name=result.model_name,
        model_version=result.model_version,
        latent_mu=to_tensor(result.latent_mu),
    )
    if result.latent_logvar is not None:
        response.latent_logvar.CopyFrom(to_tensor(result.latent_logvar))
    return response


def latents_from_response(
    response: pb.EncodeResponse,
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    mu = from_tensor(response.latent_mu, what="latent_mu")
    logvar = None
    if response.HasField("latent_logvar"):
        logvar = from_tensor(response.latent_logvar, what="latent_logvar")
    return mu, logvar


def models_response(summaries: Sequence[ModelSummary]) -> pb.ListModelsResponse:
    return pb.ListModelsResponse(
        models=[
            pb.ModelSummary(
                name=s.name,
                versions=s.versions,
                latest_version=s.latest_version,
                model_kind=s.model_kind,
            )
            for s in summaries
        ]
    )


def models_from_response(response: pb.ListModelsResponse) -> list[ModelSummary]:
    return [
        ModelSummary(m.name, tuple(m.versions), m.latest_version, m.model_kind)
        for m in response.models
    ]


def model_info_message(d: ModelInfo) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=d.name,
        version=d.version,
        model_kind=d.model_kind,
        inputs=[pb.TensorSpec(name=t.name, datatype=t.datatype, shape=t.shape) for t in d.inputs],
        outputs=[pb.TensorSpec(name=t.name, datatype=t.datatype, shape=t.shape) for t in d.outputs],
        image_shape=d.image_shape,
        score_kinds=d.score_kinds,
        default_score_kind=d.default_score_kind,
        calibration_size=d.calibration_size,
        default_alpha=d.default_alpha,
        min_alpha=d.min_alpha,
        latent_dim=d.latent_dim,
        execution_provider=d.execution_provider,
        manifest_json=d.manifest_json,
        max_batch_rows=d.max_batch_rows,
        explains=d.explains,
        calibration_group_column=d.calibration_group_column,
        calibration_groups=d.calibration_groups,
    )


def model_info_from_message(info: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=info.name,
        version=info.version,
        model_kind=info.model_kind,
        inputs=tuple(_tensor_info(t) for t in info.inputs),
        outputs=tuple(_tensor_info(t) for t in info.outputs),
        image_shape=tuple(info.image_shape),
        score_kinds=tuple(info.score_kinds),
        default_score_kind=info.default_score_kind,
        calibration_size=int(info.calibration_size),
        default_alpha=info.default_alpha,
        min_alpha=info.min_alpha,
        latent_dim=int(info.latent_dim),
        execution_provider=info.execution_provider,
        max_batch_rows=int(info.max_batch_rows),
        manifest_json=info.manifest_json,
        explains=info.explains,
        calibration_group_column=info.calibration_group_column,
        calibration_groups=tuple(info.calibration_groups),
    )


def _tensor_info(spec: pb.TensorSpec) -> TensorInfo:
    return TensorInfo(spec.name, spec.datatype, tuple(spec.shape))
