"""The metrics port: a small HTTP/1.1 server that answers `GET /metrics` and nothing else.

prometheus_client's own server gives every connection a thread and waits on it forever, so
connections that send half a request and stop pile up threads (and fill its 5-deep accept
queue); it answers every path and method too. This one runs its own asyncio loop in its own
thread, never the gRPC loop, and bounds what a caller can make it hold: at most
`max_connections` at once (past it, the oldest connection still sending its request head is
dropped for the new one, or the new one is closed at once, unread, when every connection is
being answered), the request head (TLS handshake
included) must arrive within `head_timeout_s` in all and fit in `max_head_bytes`, the whole
exchange ends within `request_timeout_s`, and a connection carries one request. Collection
runs in one worker thread, so scrapes at once queue instead of multiplying the work.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
ALLOWED_METHODS = ("GET", "HEAD")
_HEAD_END = b"\r\n\r\n"
_STOP_WAIT_S = 5.0  # close(): the longest it waits for the loop to wind down
_ACCEPT_RETRY_S = 1.0  # after accept fails (no file descriptors left)
_BACKLOG = 512  # connections the kernel queues while the loop waits for the GIL


@dataclass(frozen=True)
class HttpLimits:
    """What one caller can make the metrics port hold; the defaults suit Prometheus, whose
    scrape timeout defaults to 10 s and whose requests are a few hundred bytes."""

    max_connections: int = 64
    head_timeout_s: float = 5.0
    request_timeout_s: float = 10.0
    max_head_bytes: int = 8192

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_head_bytes < 64:
            raise ValueError(f"max_connections must be >= 1 and max_head_bytes >= 64: {self}")
        if not 0 < self.head_timeout_s <= self.request_timeout_s:
            raise ValueError(f"need 0 < head_timeout_s <= request_timeout_s: {self}")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value


def parse_head(head: bytes) -> Request | None:
    """The request line and headers of one HTTP/1.x head; None when it is not one."""
    lines = head.lstrip(b"\r\n").removesuffix(_HEAD_END).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not parts[0].isalpha():
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return None
        headers[name.lower()] = value.strip()
    path, _, query = parts[1].partition("?")
    return Request(parts[0], path, query, headers)


def exposition(
    registry: CollectorRegistry, request: Request
) -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers prometheus_client's own server would send (its encoder choice by
    Accept, `name[]` filters, gzip when accepted). Blocking: it runs every collector."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    names = parse_qs(request.query).get("name[]")
    body = encoder(registry.restricted_registry(names) if names else registry)
    headers = [("Content-Type", content_type)]
    if gzip_accepted(request.headers.get("accept-encoding", "")):
        body = gzip.compress(body)
        headers.append(("Content-Encoding", "gzip"))
    return body, headers


def response(
    status: HTTPStatus, body: bytes, headers: list[tuple[str, str]] | None = None,
    head_only: bool = False,
) -> bytes:
    """A whole response; every one closes its connection."""
    lines = [f"HTTP/1.1 {status.value} {status.phrase}"]
    lines += [f"{name}: {value}" for name, value in headers or [("Content-Type", "text/plain")]]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + (b"" if head_only else body)


def _short(status: HTTPStatus, extra: list[tuple[str, str]] | None = None) -> bytes:
    headers = [("Content-Type", "text/plain; charset=utf-8"), *(extra or [])]
    return response(status, f"{status.phrase.lower()}\n".encode(), headers)


class MetricsHttpServer:
    """`start` binds (in the caller's thread, so a taken port raises OSError there) and serves
    on a loop in a daemon thread; `close` stops it and drops every connection."""

    def __init__(self, registry: CollectorRegistry, limits: HttpLimits | None = None) -> None:
        self.registry = registry
        self.limits = HttpLimits() if limits is None else limits
        self._ssl_context: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        # One task per connection, from accept on; loop thread only.
        self._open: set[asyncio.Task[None]] = set()
        # Connections still sending their request head, oldest first: at the cap, the oldest is
        # dropped for a new one, so slow senders cannot shut scrapes out (loop thread only).
        self._heads: dict[asyncio.Task[None], None] = {}
        self._evicted: set[asyncio.Task[None]] = set()  # cancelled, not yet finished
        self._collector = ThreadPoolExecutor(1, thread_name_prefix="latentwatch-metrics-collect")

    def start(self, port: int, addr: str, ssl_context: ssl.SSLContext | None = None) -> int:
        """Returns the bound port. With `ssl_context`, HTTPS only: a plain request fails the
        handshake and its connection is closed."""
        if self._sock is not None:
            raise RuntimeError("the metrics server is already started")
        self._sock, self._ssl_context = _bind(addr, port), ssl_context
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=loop.run_forever, name="latentwatch-metrics", daemon=True
        )
        self._thread.start()
        loop.call_soon_threadsafe(self._start_accepting, self._sock)
        return int(self._sock.getsockname()[1])

    def close(self) -> None:
        """Stops listening, drops every connection (finished or not), stops the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(_STOP_WAIT_S)
        except Exception:  # a loop that will not wind down must not keep the process up
            log.exception("metrics server did not stop cleanly")
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_STOP_WAIT_S)
            if not thread.is_alive():
                loop.close()
            self._collector.shutdown(wait=False, cancel_futures=True)

    def _start_accepting(self, sock: socket.socket) -> None:
        if sock.fileno() >= 0:  # not closed by close() meanwhile
            asyncio.get_running_loop().add_reader(sock, self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        """Accepts what is waiting. A connection past the cap is closed at once, before anything
        is read or allocated for it. Synchronous, so no accepted socket goes untracked."""
        loop = asyncio.get_running_loop()
        for _ in range(4 * self.limits.max_connections):  # then let the loop run other work
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # out of file descriptors, say: the backlog waits meanwhile
                log.warning("metrics port: accept failed: %s", err)
                loop.remove_reader(sock)
                loop.call_later(_ACCEPT_RETRY_S, self._start_accepting, sock)
                return
            if len(self._open) - len(self._evicted) >= self.limits.max_connections:
                if not self._heads:  # every connection is being answered: the new one waits
                    conn.close()
                    continue
                oldest = next(iter(self._heads))
                del self._heads[oldest]
                self._evicted.add(oldest)
                oldest.cancel()
            conn.setblocking(False)
            task = loop.create_task(self._connection(conn))
            self._open.add(task)
            self._heads[task] = None
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._open.discard(task)
        self._heads.pop(task, None)
        self._evicted.discard(task)

    async def _shutdown(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock)
            self._sock.close()
        tasks = list(self._open)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, conn: socket.socket) -> None:
        """One request, one response, then close. A head that does not come in time (TLS
        handshake included) gets no reply."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(self.limits.max_head_bytes)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport: asyncio.Transport | None = None
        try:
            async with asyncio.timeout(self.limits.request_timeout_s):
                async with asyncio.timeout(self.limits.head_timeout_s):  # in all, not per read
                    transport, _ = await loop.connect_accepted_socket(
                        lambda: protocol, conn, ssl=self._ssl_context
                    )
                    head = await _read_head(reader)
                    self._heads.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
                if head is None:
                    reply = _short(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
                else:
                    reply = await self._answer(head)
                writer = asyncio.StreamWriter(transport, protocol, reader, loop)
                writer.write(reply)
                writer.close()  # flush, then close (with TLS: close_notify)
                await writer.wait_closed()
        except Exception as err:  # a peer that went away, spoke no TLS, or ran out of time
            log.debug("metrics connection dropped: %r", err)
        finally:
            if transport is None:
                conn.close()
            else:
                transport.abort()  # a no-op once closed; drops what is still queued here

    async def _answer(self, head: bytes) -> bytes:
        request = parse_head(head)
        if request is None:
            return _short(HTTPStatus.BAD_REQUEST)
        if request.path != METRICS_PATH:
            return _short(HTTPStatus.NOT_FOUND)
        if request.method not in ALLOWED_METHODS:
            return _short(HTTPStatus.METHOD_NOT_ALLOWED, [("Allow", ", ".join(ALLOWED_METHODS))])
        loop = asyncio.get_running_loop()
        body, headers = await loop.run_in_executor(
            self._collector, exposition, self.registry, request
        )
        return response(HTTPStatus.OK, body, headers, head_only=request.method == "HEAD")


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The request head; None when it runs past the reader's limit."""
    try:
        return await reader.readuntil(_HEAD_END)
    except asyncio.LimitOverrunError:
        return None


def _bind(addr: str, port: int) -> socket.socket:
    """A listening socket of the address's family (IPv6 for "::1", names resolved)."""
    family = socket.getaddrinfo(addr or None, port, type=socket.SOCK_STREAM,
                                flags=socket.AI_PASSIVE)[0][0]
    sock = socket.create_server((addr, port), family=family, backlog=_BACKLOG)
    sock.setblocking(False)
    return sock
