"""Exceptions -> gRPC status, in one place, plus per-RPC metrics.

LatentwatchError subclasses carry their status code and a message for the caller. Anything else
is a bug: the caller gets INTERNAL "internal error" and the traceback goes to the log. Either
way the server keeps serving.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from latentwatch.errors import LatentwatchError
from latentwatch.service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")


def code_of(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, LatentwatchError):
        return exc.code
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL


def status_of(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """The status and message the caller gets; logs the traceback of unexpected errors."""
    if isinstance(exc, LatentwatchError):
        return exc.code, str(exc)
    log.error("%s failed unexpectedly", method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error"


async def observed(metrics: ServiceMetrics, method: str, call: Awaitable[T]) -> T:
    """Awaits one call, counting it in flight and recording its duration and status code."""
    metrics.inflight += 1
    start = time.perf_counter()
    code = "OK"
    try:
        return await call
    except BaseException as exc:
        code = code_of(exc).name
        raise
    finally:
        metrics.inflight -= 1
        metrics.observe_request(method, code, time.perf_counter() - start)


Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamHandler = Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


def unary_rpc(method: str) -> Callable[[Handler], Handler]:
    """Decorates a servicer method with one response: unary `(self, request, context)` or
    client-streaming `(self, request_iterator, context)`; `self.metrics` is used."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await observed(self.metrics, method, handler(self, request, context))
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await context.abort(*status_of(exc, method))

        return wrapper

    return decorate


def stream_rpc(method: str) -> Callable[[StreamHandler], StreamHandler]:
    """Decorates a streaming servicer method; the first error ends the stream with its status.

    Metrics are per message: the handler wraps each message's work in `observed`.
    """

    def decorate(handler: StreamHandler) -> StreamHandler:
        @functools.wraps(handler)
        async def wrapper(
            self: Any, request_iterator: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            try:
                async for response in handler(self, request_iterator, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await context.abort(*status_of(exc, method))

        return wrapper

    return decorate
