"""Answering a request stream in request order, several requests in flight at once.

A bidirectional stream (ScoreStream, KServe's ModelStreamInfer) answers each request with one
response, in order; up to `window` requests are worked on concurrently, so that they can share
batches. An error raised by `answer` or by the request iterator ends the stream with it; work
still in flight is cancelled when the stream ends or the caller goes away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

Req = TypeVar("Req")
Resp = TypeVar("Resp")


async def answered_in_order(
    requests: AsyncIterator[Req], answer: Callable[[Req], Awaitable[Resp]], window: int
) -> AsyncIterator[Resp]:
    slots = asyncio.Semaphore(window)
    # Answers in request order; then None (end of requests) or the reader's error.
    started: asyncio.Queue[asyncio.Future[Resp] | Exception | None] = asyncio.Queue()

    async def read() -> None:
        try:
            async for request in requests:
                await slots.acquire()
                # The coroutine is made inside the task: a task cancelled before it starts
                # leaves no coroutine behind that was never awaited.
                started.put_nowait(asyncio.ensure_future(answer(request)))
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
            slots.release()
            yield response
    finally:
        reader.cancel()
        while not started.empty():
            left = started.get_nowait()
            if isinstance(left, asyncio.Future):
                left.cancel()
