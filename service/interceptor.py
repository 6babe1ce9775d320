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

from latentwatch.errors import LatentwatchError
from latentwatch.service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")
Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]

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
    return grpc.StatusCode.INTERNAL.name


def status_of(exc: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """The status and message the caller gets; logs the traceback of unexpected errors."""
    if isinstance(exc, LatentwatchError):
        return exc.code, str(exc)
    log.error("%s failed unexpectedly", method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error"


class _Observed:
    """A request of `method` in flight for the `with` block; its duration and code at the end."""

    def __init__(
        self, metrics: ServiceMetrics, method: str, context: grpc.aio.ServicerContext | None
    ) -> None:
        self.metrics, self.method, self.context = metrics, method, context
        self._start = 0.0

    def again(self) -> _Observed:
        return _Observed(self.metrics, self.method, None)

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


async def observed_message(call: Awaitable[T]) -> T:
    """Awaits one message's work in a per-message stream, recorded as one request."""
    messages = _MESSAGES_OF.get()
    if messages is None:  # not a per-message call (or no interceptor): nothing to record
        return await call
    with messages.again():
        return await call


class ErrorsAndMetrics(grpc.aio.ServerInterceptor):
    """Maps errors to status codes and records request metrics for every call on the port.

    `per_message` holds full method names ("/latentwatch.v1.Latentwatch/ScoreStream") whose
    messages are counted one by one (see `observed_message`) instead of the call as a whole.
    """

    def __init__(self, metrics: ServiceMetrics, per_message: Collection[str] = ()) -> None:
        self._metrics = metrics
        self._per_message = frozenset(per_message)
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
        method = full_name.rsplit("/", 1)[-1]
        per_message = full_name in self._per_message
        if handler.request_streaming and handler.response_streaming:
            behavior, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            behavior, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            behavior, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        else:
            behavior, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
        if inspect.isasyncgenfunction(behavior):
            wrapped = self._wrap_responses(behavior, method, per_message)
        else:  # one response, or streamed responses written with context.write
            wrapped = self._wrap_call(behavior, method, per_message)
        intercepted = factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[full_name] = (handler, intercepted)
        return intercepted

    def _observe(
        self, method: str, per_message: bool, context: grpc.aio.ServicerContext
    ) -> _Observed | None:
        """The call's observation, or None for a per-message method (its messages are)."""
        observed = _Observed(self._metrics, method, context)
        if per_message:
            _MESSAGES_OF.set(observed)
            return None
        return observed

    def _wrap_call(self, behavior: Behavior, method: str, per_message: bool) -> Behavior:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            observed = self._observe(method, per_message, context)
            try:
                if observed is None:
                    return await behavior(request, context)
                with observed:
                    return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await context.abort(*status_of(exc, method))

        return call

    def _wrap_responses(self, behavior: Behavior, method: str, per_message: bool) -> Behavior:
        async def responses(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            observed = self._observe(method, per_message, context)
            try:
                if observed is None:
                    async for response in behavior(request, context):
                        yield response
                    return
                with observed:
                    async for response in behavior(request, context):
                        yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await context.abort(*status_of(exc, method))

        return responses
