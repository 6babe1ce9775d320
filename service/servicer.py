"""gRPC adapter for latentwatch.v1.Latentwatch: protobuf in, one core call, protobuf out.

ScoreStream answers every request with one response, in request order. Up to STREAM_WINDOW
requests of one stream are scored concurrently (so they can share batches); the first request
that fails ends the stream with its status (INVALID_ARGUMENT, NOT_FOUND, ...), and requests
after it get no response. A client that wants to go on opens a new stream.

BiasReport reads the model, version and options from its first message and hands the rows of
every message to the core as they arrive; later messages may repeat the model and version but
not change them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.catalog import ModelInfo
from latentwatch.service.core import BiasChunk, EncodeResult, ScoreResult, ScoringCore
from latentwatch.service.errors import observed, stream_rpc, unary_rpc
from latentwatch.service.metrics import ServiceMetrics
from latentwatch.wire.bias import options_from_proto, response_from_report
from latentwatch.wire.tensors import from_tensor, to_tensor

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Latentwatch"].full_name
STREAM_WINDOW = 64


class LatentwatchServicer(pb_grpc.LatentwatchServicer):
    def __init__(self, core: ScoringCore, metrics: ServiceMetrics) -> None:
        self._core = core
        self.metrics = metrics  # read by the error/metrics decorators

    @unary_rpc("Score")
    async def Score(
        self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreResponse:
        return await self._score(request)

    @stream_rpc("ScoreStream")
    async def ScoreStream(
        self, request_iterator: AsyncIterator[pb.ScoreRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ScoreResponse]:
        window = asyncio.Semaphore(STREAM_WINDOW)
        # Scoring tasks in request order; then None (end of requests) or the reader's error.
        started: asyncio.Queue[asyncio.Future[pb.ScoreResponse] | Exception | None] = (
            asyncio.Queue()
        )

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await window.acquire()
                    call = observed(self.metrics, "ScoreStream", self._score(request))
                    started.put_nowait(asyncio.ensure_future(call))
            except Exception as exc:
                started.put_nowait(exc)
            else:
                started.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await started.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                response = await item
                window.release()
                yield response
        finally:
            reader.cancel()
            while not started.empty():
                left = started.get_nowait()
                if isinstance(left, asyncio.Future):
                    left.cancel()

    @unary_rpc("Encode")
    async def Encode(
        self, request: pb.EncodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.EncodeResponse:
        result = await self._core.encode(
            request.model_name, request.model_version, _input_array(request)
        )
        return encode_response(result)

    @unary_rpc("ListModels")
    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[
                pb.ModelSummary(
                    name=s.name,
                    versions=s.versions,
                    latest_version=s.latest_version,
                    model_kind=s.model_kind,
                )
                for s in self._core.list_models()
            ]
        )

    @unary_rpc("GetModel")
    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        return model_info(self._core.get_model(request.model_name, request.model_version))

    @unary_rpc("BiasReport")
    async def BiasReport(
        self,
        request_iterator: AsyncIterator[pb.BiasReportRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.BiasReportResponse:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            raise InvalidInput("empty stream: send BiasReportRequest chunks of rows")
        options, n_decoded = options_from_proto(first.options)
        result = await self._core.bias_report(
            first.model_name, first.model_version, _bias_chunks(first, requests), options,
            n_decoded,
        )
        return response_from_report(result.report, result.model_name, result.model_version)

    async def _score(self, request: pb.ScoreRequest) -> pb.ScoreResponse:
        result = await self._core.score(
            request.model_name,
            request.model_version,
            _input_array(request),
            kinds=request.score_kinds,
            alpha=request.alpha if request.HasField("alpha") else None,
            fdr=request.fdr if request.HasField("fdr") else None,
            score_kind=request.score_kind or None,
        )
        return score_response(result, request.request_id)


async def _bias_chunks(
    first: pb.BiasReportRequest, rest: AsyncIterator[pb.BiasReportRequest]
) -> AsyncIterator[BiasChunk]:
    yield _bias_chunk(first)
    async for request in rest:
        for field in ("model_name", "model_version"):
            value, expected = getattr(request, field), getattr(first, field)
            if value and value != expected:
                raise InvalidInput(
                    f"{field}: {value!r} in a later chunk, but the stream is for {expected!r}; "
                    "one stream reports on one model version"
                )
        yield _bias_chunk(request)


def _bias_chunk(request: pb.BiasReportRequest) -> BiasChunk:
    groups = {column.name: column.values for column in request.groups}
    if len(groups) != len(request.groups):
        names = [column.name for column in request.groups]
        raise InvalidInput(f"groups: column names repeat in one chunk: {names}")
    return BiasChunk(
        array=from_tensor(request.input) if request.HasField("input") else None,
        ids=request.ids or None,
        groups=groups or None,
    )


def _input_array(request: pb.ScoreRequest | pb.EncodeRequest) -> NDArray:
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
    )
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


def encode_response(result: EncodeResult) -> pb.EncodeResponse:
    response = pb.EncodeResponse(
        model_name=result.model_name,
        model_version=result.model_version,
        latent_mu=to_tensor(result.latent_mu),
    )
    if result.latent_logvar is not None:
        response.latent_logvar.CopyFrom(to_tensor(result.latent_logvar))
    return response


def model_info(d: ModelInfo) -> pb.ModelInfo:
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
    )
