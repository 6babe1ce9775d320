"""Errors and request metrics for every servicer on the port, in one server interceptor.

Every handler kind (unary or streaming requests, unary or streaming responses) is wrapped:
- a LatentwatchError ends the call with its class's status code (latentwatch/errors.py) and its
  message; anything else is a bug: INTERNAL "internal error", the traceback goes to the log, and
  the server keeps serving. A handler's own `context.abort` passes through untouched.
- each call is one request of its method (the short RPC name: "Score", "Check", ...): counted in
  flight while it runs, then its duration recorded under its status code (CANCELLED when the
  caller went away).

Methods named in `per_message` (ScoreStream) are not counted as one call: the handler wraps each
message's work in `observed_message`, so each message is one request of that method. Errors
there still end the stream with their status.

Requests are parsed here, not by gRPC: gRPC answers bytes that do not parse with UNKNOWN and the
name of a protobuf class (or, for a streamed request, an INTERNAL error with a traceback). Each
handler's deserializer runs inside the wrapped call (on each message of a request stream), and
bytes that do not parse end the call with INVALID_ARGUMENT "request is not a valid <message>";
in a per-message stream such a message is one INVALID_ARGUMENT request. Handlers read their
requests from the request iterator they are given (not `context.read()`, which would give bytes).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from types import TracebackType
from typing import Any, TypeVar

import grpc

from latentwatch.errors import InvalidInput, LatentwatchError, StreamIdle
from latentwatch.service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")
Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]
Parse = Callable[[bytes], Any]

# The method whose messages `observed_message` records, set for the calls of a per-message
# method. gRPC runs the interceptor and each call's handler in a fresh context of their own.
_MESSAGES_OF: contextvars.ContextVar[_Observed | None] = contextvars.ContextVar(
    "latentwatch_messages_of", default=None
)


def code_of(exc: BaseException | None, context: grpc.aio.ServicerContext | None) -> str:
    """The status code name a call or message ended with, for the metrics."""
    if isinstance(exc, LatentwatchError):
        return exc.code.name
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED.name
    if exc is None or isinstance(exc, grpc.aio.AbortError):
        code = context.code() if context is not None else None
        if isinstance(code, grpc.StatusCode):
            return code.name
        return grpc.StatusCode.OK.name if exc is None else grpc.StatusCode.UNKNOWN.name
    if _unimplemented(exc, context):
        return grpc.StatusCode.UNIMPLEMENTED.name
    return grpc.StatusCode.INTERNAL.name


def status_of(
    exc: Exception, method: str, context: grpc.aio.ServicerContext | None = None
) -> tuple[grpc.StatusCode, str]:
    """The status and message the caller gets; logs the traceback of unexpected errors."""
    if isinstance(exc, LatentwatchError):
        return exc.code, str(exc)
    if _unimplemented(exc, context):
        return grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by this server"
    log.error("%s failed unexpectedly", method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error"


def _unimplemented(exc: BaseException, context: grpc.aio.ServicerContext | None) -> bool:
    """Whether `exc` is a generated servicer's default for a method the servicer lacks (it
    sets UNIMPLEMENTED, then raises NotImplementedError): not a bug to log."""
    return (
        isinstance(exc, NotImplementedError)
        and context is not None
        and context.code() == grpc.StatusCode.UNIMPLEMENTED
    )


class _Observed:
    """A request of `method` in flight for the `with` block; its duration and code at the end."""

    def __init__(
        self, metrics: ServiceMetrics, method: str, context: grpc.aio.ServicerContext | None
    ) -> None:
        self.metrics, self.method, self.context = metrics, method, context
        self._start = 0.0

    def again(self) -> _Observed:
        return _Observed(self.metrics, self.method, None)

    def failed(self, exc: BaseException) -> None:
        """One more request of the method that ended with `exc` before any work started."""
        self.metrics.observe_request(self.method, code_of(exc, None), 0.0)

    def __enter__(self) -> None:
        self.metrics.inflight += 1
        self._start = time.perf_counter()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.metrics.inflight -= 1
        code = code_of(exc, self.context)
        self.metrics.observe_request(self.method, code, time.perf_counter() - self._start)


def parser(deserializer: Parse | None) -> Parse | None:
    """The handler's deserializer, raising InvalidInput that names the message when the bytes do
    not parse; None when the handler takes bytes as they come."""
    if deserializer is None:
        return None
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", "request message")

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # whatever the deserializer cannot read is the caller's bytes
            raise InvalidInput(f"request is not a valid {name}") from exc

    return parse


async def observed_message(call: Awaitable[T]) -> T:
    """Awaits one message's work in a per-message stream, recorded as one request."""
    messages = _MESSAGES_OF.get()
    if messages is None:  # not a per-message call (or no interceptor): nothing to record
        return await call
    with messages.again():
        return await call


def handler_parts(handler: grpc.RpcMethodHandler) -> tuple[Behavior, Callable[..., Any]]:
    """A handler's behaviour and the factory that makes a handler of the same kind (unary or
    streaming requests and responses), for interceptors that wrap the behaviour."""
    if handler.request_streaming and handler.response_streaming:
        return handler.stream_stream, grpc.stream_stream_rpc_method_handler
    if handler.request_streaming:
        return handler.stream_unary, grpc.stream_unary_rpc_method_handler
    if handler.response_streaming:
        return handler.unary_stream, grpc.unary_stream_rpc_method_handler
    return handler.unary_unary, grpc.unary_unary_rpc_method_handler


class ErrorsAndMetrics(grpc.aio.ServerInterceptor):
    """Maps errors to status codes and records request metrics for every call on the port.

    `per_message` holds full method names ("/latentwatch.v1.Latentwatch/ScoreStream") whose
    messages are counted one by one (see `observed_message`) instead of the call as a whole.
    """

    def __init__(
        self,
        metrics: ServiceMetrics,
        per_message: Collection[str] = (),
        stream_idle_timeout_s: float | None = None,
    ) -> None:
        self._metrics = metrics
        self._per_message = frozenset(per_message)
        self._idle_s = stream_idle_timeout_s
        # Wrapped once per method: full name -> (the servicer's handler, the wrapped one).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: gRPC answers UNIMPLEMENTED, nothing to count
            return handler
        full_name = handler_call_details.method
        cached = self._wrapped.get(full_name)
        if cached is not None and cached[0] is handler:
            return cached[1]
        behavior, factory = handler_parts(handler)
        calls = _Calls(
            self._metrics,
            method=full_name.rsplit("/", 1)[-1],
            per_message=full_name in self._per_message,
            request_streaming=handler.request_streaming,
            parse=parser(handler.request_deserializer),
            idle_s=self._idle_s,
        )
        if inspect.isasyncgenfunction(behavior):
            wrapped = calls.wrap_responses(behavior)
        else:  # one response, or streamed responses written with context.write
            wrapped = calls.wrap(behavior)
        intercepted = factory(
            wrapped,
            request_deserializer=None,  # bytes as they come: the wrapped behaviour parses them
            response_serializer=handler.response_serializer,
        )
        self._wrapped[full_name] = (handler, intercepted)
        return intercepted


class _Calls:
    """The calls of one method: requests parsed, observed, exceptions made status codes."""

    def __init__(
        self, metrics: ServiceMetrics, *, method: str, per_message: bool,
        request_streaming: bool, parse: Parse | None, idle_s: float | None = None,
    ) -> None:
        self.metrics, self.method, self.per_message = metrics, method, per_message
        self.request_streaming, self.parse = request_streaming, parse
        self.idle_s = idle_s  # a request stream with no message for this long ends

    def wrap(self, behavior: Behavior) -> Behavior:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            observed = _Observed(self.metrics, self.method, context)
            try:
                if self.per_message:  # its messages are observed, not the call
                    _MESSAGES_OF.set(observed)
                    return await behavior(self._parsed(request, observed), context)
                with observed:
                    return await behavior(self._parsed(request), context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await context.abort(*status_of(exc, self.method, context))

        return call

    def wrap_responses(self, behavior: Behavior) -> Behavior:
        async def responses(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            observed = _Observed(self.metrics, self.method, context)
            try:
                if self.per_message:  # its messages are observed, not the call
                    _MESSAGES_OF.set(observed)
                    async for response in behavior(self._parsed(request, observed), context):
                        yield response
                    return
                with observed:
                    async for response in behavior(self._parsed(request), context):
                        yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await context.abort(*status_of(exc, self.method, context))

        return responses

    def _parsed(self, request: Any, messages: _Observed | None = None) -> Any:
        """A unary request parsed now, or a request stream parsed message by message; in a
        per-message stream (`messages`), each message that does not parse is one request."""
        if self.parse is None:
            return request
        if self.request_streaming:
            return self._parse_each(request, self.parse, messages)
        return self._parse_one(request, self.parse, messages)

    async def _parse_each(
        self, raw_requests: AsyncIterator[bytes], parse: Parse, messages: _Observed | None
    ) -> AsyncIterator[Any]:
        requests = aiter(raw_requests)
        while True:
            try:
                raw = await asyncio.wait_for(anext(requests), self.idle_s)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise StreamIdle(
                    f"no message on this {self.method} stream for {self.idle_s:g} s "
                    "(LATENTWATCH_STREAM_IDLE_TIMEOUT_S); the stream is closed"
                ) from None
            yield self._parse_one(raw, parse, messages)

    @staticmethod
    def _parse_one(raw: bytes, parse: Parse, messages: _Observed | None) -> Any:
        try:
            return parse(raw)
        except InvalidInput as error:
            if messages is not None:
                messages.failed(error)
            raise
