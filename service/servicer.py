"""gRPC adapter for latentwatch.v1.Latentwatch: protobuf in, one core call, protobuf out.

Errors and request metrics are not handled here: the server's interceptor (service/interceptor.py)
maps exceptions to status codes and counts every call, except ScoreStream's, whose requests are
counted one by one: each scored message is one "ScoreStream" request (`observed_message`).

ScoreStream answers every request with one response, in request order (service/streams.py). Up
to STREAM_WINDOW requests of one stream are scored concurrently (so they can share batches); the
first request that fails ends the stream with its status (INVALID_ARGUMENT, NOT_FOUND, ...), and
requests after it get no response. A client that wants to go on opens a new stream.

BiasReport reads the model, version and options from its first message and hands the rows of
every message to the core as they arrive; later messages may repeat the model and version but
not change them, and may not carry options (they would not be used).

ModelControl (admin scope when tokens are on) runs one hot-reload pass, load or unload
(service/reload.py) and answers what changed.

Generate, Traverse and Translate ("generate" scope) hand their fields to the core
(service/generation.py), which checks every value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from latentwatch.errors import InvalidInput, quote
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.service.auth import caller_may_see
from latentwatch.service.core import BiasChunk, ScoringCore
from latentwatch.service.generation import GenerateArgs, TraverseArgs
from latentwatch.service.interceptor import observed_message
from latentwatch.service.streams import answered_in_order
from latentwatch.wire.bias import options_from_proto, response_from_report
from latentwatch.wire.control import control_response
from latentwatch.wire.generate import (
    generate_response,
    optional_tensor,
    translate_response,
    traverse_response,
)
from latentwatch.wire.score import (
    encode_response,
    input_array,
    model_info_message,
    models_response,
    score_response,
)
from latentwatch.wire.tensors import from_tensor

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Latentwatch"].full_name
# Methods whose request metrics count each message, not the call (see service/interceptor.py).
PER_MESSAGE_METHODS = frozenset({f"/{SERVICE_NAME}/ScoreStream"})
STREAM_WINDOW = 64
CONTROL_ACTIONS = {
    pb.ModelControlRequest.RELOAD: "reload",
    pb.ModelControlRequest.LOAD: "load",
    pb.ModelControlRequest.UNLOAD: "unload",
}


class LatentwatchServicer(pb_grpc.LatentwatchServicer):
    def __init__(self, core: ScoringCore) -> None:
        self._core = core

    async def Score(
        self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreResponse:
        return await self._score(request)

    async def ScoreStream(
        self, request_iterator: AsyncIterator[pb.ScoreRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ScoreResponse]:
        # Closed with this stream, so work still in flight is cancelled when the caller goes.
        async with aclosing(
            answered_in_order(request_iterator, self._score_message, STREAM_WINDOW)
        ) as responses:
            async for response in responses:
                yield response

    async def Encode(
        self, request: pb.EncodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.EncodeResponse:
        result = await self._core.encode(
            request.model_name, request.model_version, input_array(request)
        )
        return encode_response(result)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        # A token limited to some models lists only those (service/auth.py).
        visible = [m for m in self._core.list_models() if caller_may_see(m.name)]
        return models_response(visible)

    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        return model_info_message(self._core.get_model(request.model_name, request.model_version))

    async def BiasReport(
        self,
        request_iterator: AsyncIterator[pb.BiasReportRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.BiasReportResponse:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            raise InvalidInput("empty stream: send BiasReportRequest chunks of rows")
        result = await self._core.bias_report(
            first.model_name, first.model_version, _bias_chunks(first, requests),
            options_from_proto(first.options),
        )
        return response_from_report(result.report, result.model_name, result.model_version)

    async def ModelControl(
        self, request: pb.ModelControlRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelControlResponse:
        action = CONTROL_ACTIONS.get(request.action)
        if action is None:
            raise InvalidInput(
                f"action: {request.action} is not one of RELOAD, LOAD, UNLOAD"
            )
        report = await self._core.model_control(
            action, request.model_name, request.model_version
        )
        return control_response(
            report.loaded, report.reloaded, report.unloaded,
            [(r.name, r.version, r.reason) for r in report.refused],
        )

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        args = GenerateArgs(
            n=request.n,
            seed=request.seed if request.HasField("seed") else None,
            labels=list(request.labels),
            truncation=request.truncation if request.HasField("truncation") else None,
            centers=optional_tensor(request, "centers"),
            spread=request.spread if request.HasField("spread") else None,
        )
        result = await self._core.generate(request.model_name, request.model_version, args)
        return generate_response(result)

    async def Traverse(
        self, request: pb.TraverseRequest, context: grpc.aio.ServicerContext
    ) -> pb.TraverseResponse:
        args = TraverseArgs(
            rows=optional_tensor(request, "input"),
            latent=optional_tensor(request, "latent"),
            dimensions=list(request.dimensions),
            low=request.low if request.HasField("low") else None,
            high=request.high if request.HasField("high") else None,
            steps=request.steps if request.HasField("steps") else None,
            label=request.label if request.HasField("label") else None,
        )
        result = await self._core.traverse(request.model_name, request.model_version, args)
        return traverse_response(result)

    async def Translate(
        self, request: pb.TranslateRequest, context: grpc.aio.ServicerContext
    ) -> pb.TranslateResponse:
        if not request.HasField("input"):
            raise InvalidInput("input: missing; expected images (N, C, H, W), batch first")
        result = await self._core.translate(
            request.model_name, request.model_version, from_tensor(request.input)
        )
        return translate_response(result)

    async def _score_message(self, request: pb.ScoreRequest) -> pb.ScoreResponse:
        return await observed_message(self._score(request))

    async def _score(self, request: pb.ScoreRequest) -> pb.ScoreResponse:
        result = await self._core.score(
            request.model_name,
            request.model_version,
            input_array(request),
            kinds=request.score_kinds,
            alpha=request.alpha if request.HasField("alpha") else None,
            fdr=request.fdr if request.HasField("fdr") else None,
            score_kind=request.score_kind or None,
            explain=request.explain,
            explain_top_k=request.explain_top_k,
            groups=request.groups,
        )
        return score_response(result, request.request_id)


async def _bias_chunks(
    first: pb.BiasReportRequest, rest: AsyncIterator[pb.BiasReportRequest]
) -> AsyncIterator[BiasChunk]:
    yield _bias_chunk(first)
    index = 0
    async for request in rest:
        index += 1
        for field in ("model_name", "model_version"):
            value, expected = getattr(request, field), getattr(first, field)
            if value and value != expected:
                raise InvalidInput(
                    f"{field}: {quote(value)} in a later chunk, but the stream is for "
                    f"{quote(expected)}; one stream reports on one model version"
                )
        if request.HasField("options"):
            raise InvalidInput(
                f"options: set in chunk {index}, but only the first chunk's are read; send "
                "them with the first chunk only"
            )
        yield _bias_chunk(request)


def _bias_chunk(request: pb.BiasReportRequest) -> BiasChunk:
    groups = {column.name: column.values for column in request.groups}
    if len(groups) != len(request.groups):
        counts = Counter(column.name for column in request.groups)
        twice = next(name for name, count in counts.items() if count > 1)
        raise InvalidInput(f"groups: column {quote(twice)} appears more than once in one chunk")
    return BiasChunk(
        array=from_tensor(request.input) if request.HasField("input") else None,
        ids=request.ids or None,
        groups=groups or None,
    )
