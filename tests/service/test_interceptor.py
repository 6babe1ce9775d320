"""The errors-and-metrics interceptor over a real server and a real channel.

A probe service with every handler kind (and the same kinds again with protobuf requests), the
health service and a Latentwatch servicer that fails on demand share one port and one
interceptor, as in service/server.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import latentwatch.errors as errors_module
from latentwatch.client.client import LatentwatchClient
from latentwatch.errors import (
    STATUS_TABLE,
    DataError,
    FailedPrecondition,
    InvalidInput,
    LatentwatchError,
    ModelNotFound,
    NotReady,
    PermissionDenied,
    QueueFull,
    RequestTooLarge,
    StreamIdle,
    Unauthenticated,
    VersionRefused,
)
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.service.interceptor import ErrorsAndMetrics, observed_message
from latentwatch.service.metrics import ServiceMetrics

PROBE = "latentwatch.test.Probe"
SERVICE = pb.DESCRIPTOR.services_by_name["Latentwatch"].full_name
PARSED = "latentwatch.test.Parsed"  # the probe's handler kinds, taking GetModelRequest messages
GARBAGE = b"\xff\xff\xff\xff"  # no protobuf message parses from these bytes
ERRORS = {cls.__name__: cls for cls in STATUS_TABLE}
SECRET = "secret detail 42"


async def act(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """What a probe request asks for: raise a class of the table, fail, abort, wait, or echo."""
    verb, _, arg = request.decode().partition(":")
    if verb == "raise":
        raise ERRORS[arg](f"{arg} says no")
    if verb == "unknown":
        raise RuntimeError(SECRET)
    if verb == "abort":
        await context.abort(grpc.StatusCode.ABORTED, "nope")
    if verb == "wait":
        await asyncio.sleep(60)
    return request


async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return await act(request, context)


async def responses(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    yield await act(request, context)


async def written(request: bytes, context: grpc.aio.ServicerContext) -> None:
    await context.write(b"first")
    await context.write(await act(request, context))


async def upload(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    received = [request async for request in requests]
    return await act(received[-1], context)


async def chat(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
    async for request in requests:
        yield await act(request, context)


async def per_message(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
    async for request in requests:
        yield await observed_message(act(request, context))


def _name(request: pb.GetModelRequest) -> bytes:
    assert isinstance(request, pb.GetModelRequest)  # parsed before the handler runs
    return request.model_name.encode()


async def _names(requests: AsyncIterator[pb.GetModelRequest]) -> AsyncIterator[bytes]:
    async for request in requests:
        yield _name(request)


async def parsed_unary(request: pb.GetModelRequest, context: grpc.aio.ServicerContext) -> bytes:
    return await unary(_name(request), context)


async def parsed_responses(request: pb.GetModelRequest, context: grpc.aio.ServicerContext) -> Any:
    async for response in responses(_name(request), context):
        yield response


async def parsed_written(request: pb.GetModelRequest, context: grpc.aio.ServicerContext) -> None:
    await written(_name(request), context)


async def parsed_upload(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> bytes:
    return await upload(_names(requests), context)


async def parsed_chat(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
    async for response in chat(_names(requests), context):
        yield response


async def parsed_per_message(
    requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
) -> Any:
    async for response in per_message(_names(requests), context):
        yield response


def message(text: str) -> bytes:
    """A serialized GetModelRequest naming `text`: what the Parsed methods act on."""
    return pb.GetModelRequest(model_name=text).SerializeToString()


class FailingLatentwatch(pb_grpc.LatentwatchServicer):
    """GetModel raises the table's class named by `model_name` (or aborts with a code)."""

    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        await act(request.model_name.encode(), context)
        return pb.ModelInfo(name=request.model_name)


class ProbeServer:
    """The interceptor's server on an ephemeral port, on an event loop in a background thread."""

    def __init__(self) -> None:
        self.metrics = ServiceMetrics()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        self.target = f"127.0.0.1:{self.port}"
        self.channel = grpc.insecure_channel(self.target)

    async def _start(self) -> int:
        interceptor = ErrorsAndMetrics(
            self.metrics, per_message={f"/{PROBE}/PerMessage", f"/{PARSED}/ParsedPerMessage"}
        )
        self.server = grpc.aio.server(interceptors=[interceptor])
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Responses": grpc.unary_stream_rpc_method_handler(responses),
            "Written": grpc.unary_stream_rpc_method_handler(written),
            "Upload": grpc.stream_unary_rpc_method_handler(upload),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
            "PerMessage": grpc.stream_stream_rpc_method_handler(per_message),
        }
        parse = {"request_deserializer": pb.GetModelRequest.FromString}
        parsed = {
            "ParsedUnary": grpc.unary_unary_rpc_method_handler(parsed_unary, **parse),
            "ParsedResponses": grpc.unary_stream_rpc_method_handler(parsed_responses, **parse),
            "ParsedWritten": grpc.unary_stream_rpc_method_handler(parsed_written, **parse),
            "ParsedUpload": grpc.stream_unary_rpc_method_handler(parsed_upload, **parse),
            "ParsedChat": grpc.stream_stream_rpc_method_handler(parsed_chat, **parse),
            "ParsedPerMessage": grpc.stream_stream_rpc_method_handler(parsed_per_message, **parse),
        }
        self.server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler(PROBE, handlers),
            grpc.method_handlers_generic_handler(PARSED, parsed),
        ])
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), self.server)
        pb_grpc.add_LatentwatchServicer_to_server(FailingLatentwatch(), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    def call(self, method: str, requests: list[bytes]) -> list[bytes]:
        """Calls a probe method with its handler kind; returns the responses received."""
        kind = method.removeprefix("Parsed")
        path = f"/{PARSED if kind != method else PROBE}/{method}"
        if kind == "Unary":
            return [self.channel.unary_unary(path)(requests[0], timeout=10)]
        if kind in ("Responses", "Written"):
            return self._collect(self.channel.unary_stream(path)(requests[0], timeout=10))
        if kind == "Upload":
            return [self.channel.stream_unary(path)(iter(requests), timeout=10)]
        return self._collect(self.channel.stream_stream(path)(iter(requests), timeout=10))

    def _collect(self, stream: Iterator[bytes]) -> list[bytes]:
        self.received: list[bytes] = []
        for response in stream:
            self.received.append(response)
        return self.received

    def count(self, method: str, code: str) -> float:
        labels = {"method": method, "code": code}
        value = self.metrics.registry.get_sample_value("latentwatch_requests_total", labels)
        return value or 0.0

    def inflight(self) -> float:
        return self.metrics.registry.get_sample_value("latentwatch_inflight_requests") or 0.0

    def close(self) -> None:
        self.channel.close()
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def probe() -> Iterator[ProbeServer]:
    server = ProbeServer()
    yield server
    server.close()


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


KINDS = ["Unary", "Responses", "Written", "Upload", "Chat"]
STREAMED_FIRST = {"Responses": [b"first"], "Written": [b"first"], "Chat": [b"ok"]}


def requests_for(method: str, last: bytes, first: bytes = b"ok") -> list[bytes]:
    return [first, last] if method in ("Upload", "Chat") else [last]


@pytest.mark.parametrize("method", KINDS)
@pytest.mark.parametrize("error_class", STATUS_TABLE, ids=lambda c: c.__name__)
def test_each_class_of_the_table_ends_the_call_with_its_code_and_message(
    error_class: type[LatentwatchError], method: str, probe: ProbeServer
) -> None:
    name = error_class.__name__
    before = probe.count(method, error_class.code.name)
    probe.received = []
    with pytest.raises(grpc.RpcError) as caught:
        probe.call(method, requests_for(method, f"raise:{name}".encode()))
    assert caught.value.code() == error_class.code
    assert caught.value.details() == f"{name} says no"
    # Responses sent before the error still arrive; the error ends the stream.
    assert probe.received == STREAMED_FIRST.get(method, [])
    assert probe.count(method, error_class.code.name) == before + 1


@pytest.mark.parametrize("method", KINDS)
def test_unknown_exceptions_become_internal_with_a_generic_message_and_a_logged_traceback(
    method: str, probe: ProbeServer, caplog: pytest.LogCaptureFixture
) -> None:
    before = probe.count(method, "INTERNAL")
    with caplog.at_level(logging.ERROR, logger="latentwatch.service.interceptor"):
        with pytest.raises(grpc.RpcError) as caught:
            probe.call(method, requests_for(method, b"unknown"))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"
    assert SECRET not in caught.value.details()
    logged = [r for r in caplog.records if r.name == "latentwatch.service.interceptor"]
    assert any(
        method in r.getMessage() and r.exc_info and str(r.exc_info[1]) == SECRET for r in logged
    ), [r.getMessage() for r in logged]
    assert probe.count(method, "INTERNAL") == before + 1
    assert probe.call("Unary", [b"still serving"]) == [b"still serving"]


@pytest.mark.parametrize("kind", KINDS)
def test_parsed_requests_reach_the_handler_as_messages(kind: str, probe: ProbeServer) -> None:
    method = f"Parsed{kind}"
    before = probe.count(method, "OK")
    assert probe.call(method, requests_for(kind, message("fine"), message("ok")))[-1] == b"fine"
    assert probe.count(method, "OK") == before + 1


@pytest.mark.parametrize("kind", KINDS)
def test_requests_that_do_not_parse_end_the_call_with_invalid_argument_naming_the_message(
    kind: str, probe: ProbeServer, caplog: pytest.LogCaptureFixture
) -> None:
    # gRPC's own parsing answered UNKNOWN "Unexpected <class 'google.protobuf.message.
    # DecodeError'>: ..." (unary requests) or INTERNAL with a logged traceback (streams).
    method = f"Parsed{kind}"
    before = probe.count(method, "INVALID_ARGUMENT")
    probe.received = []
    with caplog.at_level(logging.INFO):
        with pytest.raises(grpc.RpcError) as caught:
            probe.call(method, requests_for(kind, GARBAGE, message("ok")))
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "request is not a valid latentwatch.v1.GetModelRequest"
    )
    # A unary request fails before the handler runs; Chat answered the message before.
    assert probe.received == ([b"ok"] if kind == "Chat" else [])
    assert probe.count(method, "INVALID_ARGUMENT") == before + 1
    assert not [r.getMessage() for r in caplog.records if r.exc_info]
    assert probe.call(method, requests_for(kind, message("again"), message("ok")))[-1] == b"again"


def test_a_message_that_does_not_parse_is_one_request_of_a_per_message_stream(
    probe: ProbeServer,
) -> None:
    ok = probe.count("ParsedPerMessage", "OK")
    bad = probe.count("ParsedPerMessage", "INVALID_ARGUMENT")
    with pytest.raises(grpc.RpcError) as caught:
        probe.call("ParsedPerMessage", [message("a"), message("b"), GARBAGE, message("c")])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert probe.received == [b"a", b"b"]
    assert probe.count("ParsedPerMessage", "OK") == ok + 2
    assert probe.count("ParsedPerMessage", "INVALID_ARGUMENT") == bad + 1


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (f"/{SERVICE}/GetModel", "Unary"),
        ("/grpc.health.v1.Health/Check", "Unary"),
        ("/grpc.health.v1.Health/Watch", "Responses"),
    ],
    ids=lambda value: value.rsplit("/", 1)[-1],
)
def test_generated_servicers_on_the_port_answer_undecodable_bytes_the_same_way(
    path: str, kind: str, probe: ProbeServer
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        if kind == "Unary":
            probe.channel.unary_unary(path)(GARBAGE, timeout=10)
        else:
            list(probe.channel.unary_stream(path)(GARBAGE, timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("request is not a valid ")
    assert caught.value.details().endswith(("GetModelRequest", "HealthCheckRequest"))


def test_a_method_the_servicer_lacks_is_unimplemented_not_an_internal_error(
    probe: ProbeServer, caplog: pytest.LogCaptureFixture
) -> None:
    # FailingLatentwatch has no Score: the generated default sets UNIMPLEMENTED and raises
    # NotImplementedError, which was INTERNAL with a logged traceback.
    before = probe.count("Score", "UNIMPLEMENTED")
    request = pb.ScoreRequest(model_name="m").SerializeToString()
    with caplog.at_level(logging.INFO):
        with pytest.raises(grpc.RpcError) as caught:
            probe.channel.unary_unary(f"/{SERVICE}/Score")(request, timeout=10)
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.UNIMPLEMENTED, "Score is not implemented by this server"
    )
    assert probe.count("Score", "UNIMPLEMENTED") == before + 1
    assert not [r.getMessage() for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("method", KINDS)
def test_a_handlers_own_abort_passes_through(method: str, probe: ProbeServer) -> None:
    before = probe.count(method, "ABORTED")
    with pytest.raises(grpc.RpcError) as caught:
        probe.call(method, requests_for(method, b"abort"))
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.ABORTED, "nope"
    )
    # abort sends the status before the handler's frame unwinds, so the count may follow it.
    wait_until(lambda: probe.count(method, "ABORTED") == before + 1)


@pytest.mark.parametrize("method", KINDS)
def test_calls_are_counted_once_with_their_duration(method: str, probe: ProbeServer) -> None:
    before = probe.count(method, "OK")
    assert probe.call(method, requests_for(method, b"fine"))[-1] == b"fine"
    assert probe.count(method, "OK") == before + 1
    duration = probe.metrics.registry.get_sample_value(
        "latentwatch_request_duration_seconds_count", {"method": method, "code": "OK"}
    )
    assert duration == before + 1


def test_a_per_message_stream_counts_each_message_not_the_call(probe: ProbeServer) -> None:
    ok, bad = probe.count("PerMessage", "OK"), probe.count("PerMessage", "INVALID_ARGUMENT")
    assert probe.call("PerMessage", [b"a", b"b", b"c"]) == [b"a", b"b", b"c"]
    assert probe.count("PerMessage", "OK") == ok + 3
    with pytest.raises(grpc.RpcError) as caught:
        probe.call("PerMessage", [b"d", b"raise:InvalidInput"])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert probe.count("PerMessage", "OK") == ok + 4
    assert probe.count("PerMessage", "INVALID_ARGUMENT") == bad + 1


def test_a_call_is_in_flight_while_it_runs_and_cancelled_when_the_caller_leaves(
    probe: ProbeServer,
) -> None:
    before = probe.count("Unary", "CANCELLED")
    call = probe.channel.unary_unary(f"/{PROBE}/Unary").future(b"wait", timeout=30)
    wait_until(lambda: probe.inflight() == 1)
    call.cancel()
    wait_until(lambda: probe.count("Unary", "CANCELLED") == before + 1)
    assert probe.inflight() == 0


def test_a_second_servicer_on_the_port_is_counted_too(probe: ProbeServer) -> None:
    stub = health_pb2_grpc.HealthStub(probe.channel)
    ok, missing = probe.count("Check", "OK"), probe.count("Check", "NOT_FOUND")
    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert probe.count("Check", "OK") == ok + 1
    wait_until(lambda: probe.count("Check", "NOT_FOUND") == missing + 1)  # an abort


# What the client raises for each class the server raises: the first class of its status code.
CLIENT_RAISES: dict[type[LatentwatchError], type[LatentwatchError]] = {
    LatentwatchError: LatentwatchError,
    InvalidInput: InvalidInput,
    ModelNotFound: ModelNotFound,
    QueueFull: QueueFull,
    NotReady: NotReady,
    DataError: InvalidInput,
    Unauthenticated: Unauthenticated,
    PermissionDenied: PermissionDenied,
    RequestTooLarge: QueueFull,  # RESOURCE_EXHAUSTED: the client's class for the code
    StreamIdle: StreamIdle,
    FailedPrecondition: FailedPrecondition,
    VersionRefused: LatentwatchError,
}


def test_the_table_lists_every_error_class() -> None:
    defined = {
        value for value in vars(errors_module).values()
        if isinstance(value, type) and issubclass(value, LatentwatchError)
    }
    assert set(STATUS_TABLE) == defined == set(CLIENT_RAISES)


@pytest.mark.parametrize("error_class", STATUS_TABLE, ids=lambda c: c.__name__)
def test_the_client_raises_the_class_of_the_status_code(
    error_class: type[LatentwatchError], probe: ProbeServer
) -> None:
    name = error_class.__name__
    with LatentwatchClient(probe.target, timeout_s=10) as client:
        with pytest.raises(LatentwatchError) as caught:
            client.get_model(f"raise:{name}")
    assert type(caught.value) is CLIENT_RAISES[error_class]
    assert caught.value.code == error_class.code
    assert str(caught.value) == f"{name} says no"
    assert probe.count("GetModel", error_class.code.name) >= 1


def test_the_client_keeps_a_code_outside_the_table(probe: ProbeServer) -> None:
    with LatentwatchClient(probe.target, timeout_s=10) as client:
        with pytest.raises(LatentwatchError) as caught:
            client.get_model("abort")
        assert client.get_model("fine").name == "fine"
    assert type(caught.value) is LatentwatchError
    assert caught.value.code == grpc.StatusCode.ABORTED
    assert str(caught.value) == "nope"
