"""gRPC adapter for KServe v2 (inference.GRPCInferenceService), as tritonclient.grpc calls it.

Protobuf in, one call into service/kserve.py, protobuf out; the messages and the servicer base
are tritonclient's generated code. Errors and request metrics come from the port's interceptor
(service/interceptor.py), as for latentwatch.v1; ModelStreamInfer's messages are counted one by
one (each is one "ModelStreamInfer" request, PER_MESSAGE_METHODS).

ModelInfer reads inputs from `raw_input_contents` (one entry per input, little-endian) or, when
that is empty, from each input's typed `contents`; responses carry `raw_output_contents`, as
Triton's do. Per-tensor parameters are ignored; an output's `classification` is refused.

ModelStreamInfer answers every request in order, up to STREAM_WINDOW of them in flight (so
they can share batches). A request that fails is answered with its `error_message` and the
stream goes on, as Triton does; a message whose bytes do not parse ends the stream with
INVALID_ARGUMENT, since its place in the stream cannot be answered.

RepositoryModelLoad and RepositoryModelUnload are ModelControl's load and unload of a model
(every version on disk; "admin" scope); load parameters (config overrides, files) are refused.
Shared memory, trace and log settings answer UNIMPLEMENTED.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TypeAlias

import grpc
from tritonclient.grpc import service_pb2 as v2
from tritonclient.grpc import service_pb2_grpc as v2_grpc

from latentwatch.errors import InvalidInput, LatentwatchError, quote
from latentwatch.service.core import ScoringCore
from latentwatch.service.interceptor import observed_message
from latentwatch.service.kserve import KServe, Param, V2Request, V2Response, V2Tensor
from latentwatch.service.streams import answered_in_order
from latentwatch.wire.v2_tensors import (
    CONTENTS_FIELD,
    check_datatype,
    from_contents,
    from_raw,
    to_raw,
)

Context: TypeAlias = grpc.aio.ServicerContext
SERVICE_NAME = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
PER_MESSAGE_METHODS = frozenset({f"/{SERVICE_NAME}/ModelStreamInfer"})
STREAM_WINDOW = 64
_UNIMPLEMENTED = (
    "SystemSharedMemoryStatus", "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
    "TraceSetting", "LogSettings",
)


class KServeServicer(v2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, core: ScoringCore) -> None:
        self._core = core
        self._kserve = KServe(core)

    async def ServerLive(self, request: v2.ServerLiveRequest, context: Context
    ) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=self._kserve.server_live())

    async def ServerReady(self, request: v2.ServerReadyRequest, context: Context
    ) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=self._kserve.server_ready())

    async def ModelReady(self, request: v2.ModelReadyRequest, context: Context
    ) -> v2.ModelReadyResponse:
        return v2.ModelReadyResponse(ready=self._kserve.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: v2.ServerMetadataRequest, context: Context
    ) -> v2.ServerMetadataResponse:
        meta = self._kserve.server_metadata()
        return v2.ServerMetadataResponse(
            name=meta.name, version=meta.version, extensions=meta.extensions
        )

    async def ModelMetadata(self, request: v2.ModelMetadataRequest, context: Context
    ) -> v2.ModelMetadataResponse:
        meta = self._kserve.model_metadata(request.name, request.version)
        tensor = v2.ModelMetadataResponse.TensorMetadata
        return v2.ModelMetadataResponse(
            name=meta.name, versions=meta.versions, platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape)
                     for t in meta.outputs],
        )

    async def ModelConfig(self, request: v2.ModelConfigRequest, context: Context
    ) -> v2.ModelConfigResponse:
        return v2.ModelConfigResponse(
            config=self._kserve.model_config(request.name, request.version)
        )

    async def RepositoryIndex(self, request: v2.RepositoryIndexRequest, context: Context
    ) -> v2.RepositoryIndexResponse:
        entries = self._kserve.repository_index(ready_only=request.ready)
        index = v2.RepositoryIndexResponse.ModelIndex
        return v2.RepositoryIndexResponse(models=[
            index(name=e.name, version=e.version, state=e.state, reason=e.reason) for e in entries
        ])

    async def ModelStatistics(self, request: v2.ModelStatisticsRequest, context: Context
    ) -> v2.ModelStatisticsResponse:
        stats = []
        for s in self._kserve.model_statistics(request.name, request.version):
            duration = v2.StatisticDuration
            stats.append(v2.ModelStatistics(
                name=s.name, version=s.version, last_inference=s.last_inference_ms,
                inference_count=s.inference_count, execution_count=s.execution_count,
                inference_stats=v2.InferStatistics(
                    success=duration(count=s.success_count, ns=s.success_ns),
                    fail=duration(count=s.fail_count, ns=s.fail_ns),
                    compute_infer=duration(count=s.success_count, ns=s.success_ns),
                ),
            ))
        return v2.ModelStatisticsResponse(model_stats=stats)

    async def ModelInfer(self, request: v2.ModelInferRequest, context: Context
    ) -> v2.ModelInferResponse:
        return await self._infer(request)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[v2.ModelInferRequest], context: Context
    ) -> AsyncIterator[v2.ModelStreamInferResponse]:
        # Closed with this stream, so work still in flight is cancelled when the caller goes.
        async with aclosing(
            answered_in_order(request_iterator, self._stream_answer, STREAM_WINDOW)
        ) as answers:
            async for answer in answers:
                yield answer

    async def RepositoryModelLoad(
        self, request: v2.RepositoryModelLoadRequest, context: Context
    ) -> v2.RepositoryModelLoadResponse:
        if request.parameters:
            raise InvalidInput(
                f"parameters: {sorted(request.parameters)}; a load takes none here (versions "
                "load from the repository on disk)"
            )
        await self._core.model_control("load", request.model_name)
        return v2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: v2.RepositoryModelUnloadRequest, context: Context
    ) -> v2.RepositoryModelUnloadResponse:
        await self._core.model_control("unload", request.model_name)
        return v2.RepositoryModelUnloadResponse()

    async def _stream_answer(self, request: v2.ModelInferRequest) -> v2.ModelStreamInferResponse:
        try:
            response = await observed_message(self._infer(request))
        except LatentwatchError as err:
            return v2.ModelStreamInferResponse(
                error_message=str(err),
                infer_response=v2.ModelInferResponse(model_name=request.model_name,
                                                      model_version=request.model_version,
                                                      id=request.id),
            )
        return v2.ModelStreamInferResponse(infer_response=response)

    async def _infer(self, request: v2.ModelInferRequest) -> v2.ModelInferResponse:
        return response_message(await self._kserve.infer(request_of(request)))


def add_kserve_servicer(core: ScoringCore, server: grpc.aio.Server) -> None:
    """Serves inference.GRPCInferenceService over `core` on the server's port."""
    v2_grpc.add_GRPCInferenceServiceServicer_to_server(KServeServicer(core), server)


def _unimplemented(method: str) -> object:
    async def refuse(self: KServeServicer, request: object, context: Context) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{method} is not implemented by latentwatch: it serves KServe v2 inference, "
            "metadata, statistics and repository calls, without shared memory, traces or log "
            "settings",
        )

    refuse.__name__ = method
    return refuse


for _method in _UNIMPLEMENTED:
    setattr(KServeServicer, _method, _unimplemented(_method))


def request_of(message: v2.ModelInferRequest) -> V2Request:
    """The request's tensors decoded (raw or typed contents), parameters as Python values."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(
            f"raw_input_contents: {len(raw)} entries for {len(message.inputs)} inputs; send one "
            "per input, or none and typed contents"
        )
    inputs = []
    for i, tensor in enumerate(message.inputs):
        name = tensor.name or f"inputs[{i}]"
        datatype = check_datatype(tensor.datatype, name)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(f"{name}: both raw_input_contents and contents; send one")
            data = from_raw(raw[i], datatype, tensor.shape, name)
        else:
            field = CONTENTS_FIELD.get(datatype)
            if field is None:
                raise InvalidInput(f"{name}: {datatype} has no typed contents; send it raw")
            data = from_contents(getattr(tensor.contents, field), datatype, tensor.shape, name)
        inputs.append(V2Tensor(tensor.name, datatype, tuple(data.shape), data))
    for output in message.outputs:
        if "classification" in output.parameters:
            raise InvalidInput(f"outputs: {quote(output.name)} asks for classification; "
                               "this server returns scores, not classes")
    return V2Request(
        model=message.model_name, version=message.model_version, id=message.id,
        inputs=tuple(inputs),
        parameters={k: parameter_value(k, p) for k, p in message.parameters.items()},
        outputs=tuple(o.name for o in message.outputs),
    )


def parameter_value(key: str, parameter: v2.InferParameter) -> Param:
    kind = parameter.WhichOneof("parameter_choice")
    if kind is None:
        raise InvalidInput(f"parameters: {quote(key)} has no value")
    value: Param = getattr(parameter, kind)
    return value


def response_message(response: V2Response) -> v2.ModelInferResponse:
    message = v2.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id,
    )
    for key, value in response.parameters.items():
        set_parameter(message.parameters[key], value)
    for tensor in response.outputs:
        message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        message.raw_output_contents.append(to_raw(tensor.data, tensor.datatype))
    return message


def set_parameter(parameter: v2.InferParameter, value: Param) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, float):
        parameter.double_param = value
    else:
        parameter.string_param = value
