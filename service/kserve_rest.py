"""KServe v2 over HTTP/REST on its own port (8000 by default, as Triton), on aiohttp.

A thin front end over service/kserve.py's KServe, on the gRPC server's event loop, with the
routes tritonclient.http calls: health, server and model metadata, model config, readiness,
infer (JSON and the binary tensor extension: service/kserve_http_codec.py), statistics, the
repository index, and a model's load and unload (ModelControl); shared memory, trace and log
routes are not served (404, like any unknown route). What gRPC gives every call, each request
gets here too:
- errors: a LatentwatchError becomes the HTTP status of its gRPC code (latentwatch/errors.py)
  and `{"error": "<message>"}`, the same message gRPC sends; anything else is 500 "internal
  error" with the traceback in the log; unknown routes 404, wrong methods 405, both JSON;
- metrics: one request of the KServe method the route stands for (ModelInfer, ModelMetadata,
  ...) under its gRPC code name, in the same series as the gRPC port's (they are summed);
- tokens: `Authorization: Bearer <token>` checked by service/auth.py's `authorize`, the same
  scopes as the gRPC methods; ServerLive and ServerReady are open;
- limits: the body at most `http_max_body_bytes` after decompression (413), within
  `http_body_timeout_s` (408); at most `http_max_concurrent` requests at once (429; health
  exempt); a connection idle, or with an unfinished request head, for `http_idle_timeout_s`
  is closed. Request bodies may be gzip or deflate (Content-Encoding); responses are compressed
  when Accept-Encoding asks.
TLS, with client certificates when the gRPC port asks for them, comes from
service/security.py's `http_ssl_context`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, is_dataclass
from typing import Any

import grpc
from aiohttp import web

from latentwatch.errors import (
    InvalidInput,
    LatentwatchError,
    QueueFull,
    RequestTooLarge,
    StreamIdle,
    http_status,
    quote,
)
from latentwatch.service.auth import TokenFile, authorize, bearer_token
from latentwatch.service.core import ScoringCore
from latentwatch.service.kserve import KServe
from latentwatch.service.kserve_http_codec import (
    BINARY_HEADER,
    dumps,
    encode_infer,
    message_json,
    parse_infer,
    parse_json,
    statistics_json,
)
from latentwatch.service.metrics import ServiceMetrics
from latentwatch.service.settings import Settings

log = logging.getLogger(__name__)

JSON = "application/json"
OCTETS = "application/octet-stream"
OPEN_METHODS = frozenset({"ServerLive", "ServerReady"})  # no token, no concurrency slot
_READ_CHUNK = 2**16
_COMPRESS_MIN_BYTES = 1024  # smaller responses go as they are, compression asked or not
_THREAD_PARSE_BYTES = 2**16  # JSON past this is parsed and answered off the event loop

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(document: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(document), status=status, content_type=JSON)


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def plain(value: Any) -> Any:
    """A KServe dataclass (or a list of them) as JSON-ready values, tuples as lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class RestServer:
    """The REST front end over one KServe core; `start` binds, `stop` drains and closes."""

    def __init__(
        self, kserve: KServe, core: ScoringCore, settings: Settings, metrics: ServiceMetrics,
        tokens: TokenFile | None, max_body_bytes: int,
    ) -> None:
        self._kserve, self._core, self._settings, self._metrics = kserve, core, settings, metrics
        self._tokens = tokens
        self._max_body_bytes = max_body_bytes
        self._active = 0  # requests holding a concurrency slot
        self._runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[self._unrouted])
        self._routes()

    def _routes(self) -> None:
        add, model = self.app.router, "/v2/models/{model}"
        versioned = (model, model + "/versions/{version}")
        add.add_get("/v2/health/live", self._endpoint("ServerLive", self._live))
        add.add_get("/v2/health/ready", self._endpoint("ServerReady", self._ready))
        add.add_get("/v2", self._endpoint("ServerMetadata", self._server_metadata))
        add.add_get("/v2/models/stats", self._endpoint("ModelStatistics", self._statistics))
        add.add_post("/v2/repository/index", self._endpoint("RepositoryIndex", self._index))
        control = "/v2/repository/models/{model}/"
        add.add_post(control + "load", self._endpoint("RepositoryModelLoad", self._load))
        add.add_post(control + "unload", self._endpoint("RepositoryModelUnload", self._unload))
        for base in versioned:
            add.add_get(base, self._endpoint("ModelMetadata", self._model_metadata))
            add.add_get(base + "/ready", self._endpoint("ModelReady", self._model_ready))
            add.add_get(base + "/config", self._endpoint("ModelConfig", self._model_config))
            add.add_get(base + "/stats", self._endpoint("ModelStatistics", self._statistics))
            add.add_post(base + "/infer", self._endpoint("ModelInfer", self._infer))

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        """Binds and serves; returns the bound port. OSError when the address is taken."""
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False,
            keepalive_timeout=self._settings.http_idle_timeout_s,
            auto_decompress=False,  # _body decompresses, bounded by the body limit
            shutdown_timeout=self._settings.shutdown_grace_s,
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, host, port, ssl_context=ssl_context,
            reuse_port=self._settings.reuse_port, backlog=512,
        )
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        return int(self._runner.addresses[0][1])  # (host, port[, flow, scope]) of the socket

    async def stop(self, grace_s: float) -> None:
        """Stops accepting; requests in flight get `grace_s` to finish, then connections close."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        runner._shutdown_timeout = grace_s  # aiohttp reads it at cleanup
        await runner.cleanup()

    # --- what every request goes through -------------------------------------------------

    @web.middleware
    async def _unrouted(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """aiohttp's own answers (no such route, wrong method, unreadable request) as JSON."""
        try:
            return await handler(request)
        except web.HTTPException as err:
            if err.status < 400:
                raise
            message = f"{request.method} {quote(request.path)}: {err.reason.lower()}"
            response = _error(err.status, message)
            if err.status == 405:
                response.headers["Allow"] = err.headers.get("Allow", "")
            return response

    def _endpoint(
        self, method: str, answer: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Handler:
        """`answer` as the KServe method `method`: a concurrency slot, the token check,
        errors as JSON with their HTTP status, and one request in the metrics."""

        async def handle(request: web.Request) -> web.StreamResponse:
            start = time.perf_counter()
            code = grpc.StatusCode.OK.name
            slot = method not in OPEN_METHODS
            self._metrics.inflight += 1
            try:
                if slot and self._active >= self._settings.http_max_concurrent:
                    raise QueueFull(
                        f"{self._settings.http_max_concurrent} REST requests are being handled "
                        "(LATENTWATCH_HTTP_MAX_CONCURRENT); retry later"
                    )
                self._active += slot
                try:
                    self._authorize(request, method)
                    response = await answer(request)
                finally:
                    self._active -= slot
                coding = _response_coding(request, response)
                if coding is not None:
                    response.enable_compression(coding)
                return response
            except LatentwatchError as err:
                code = err.code.name
                log.debug("%s refused: %s", method, err)
                return _error(http_status(err), str(err))
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED.name  # the caller went away
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL.name
                log.exception("%s failed unexpectedly", method)
                return _error(500, "internal error")
            finally:
                self._metrics.inflight -= 1
                self._metrics.observe_request(method, code, time.perf_counter() - start)

        return handle

    def _authorize(self, request: web.Request, method: str) -> None:
        if self._tokens is None:
            return
        header = request.headers.get("Authorization")
        token = None if header is None else bearer_token([("authorization", header)])
        model = request.match_info.get("model")
        if model is None and method == "ModelStatistics":
            model = ""  # every model: listed as far as the token may see them
        authorize(self._tokens, token, method, model)

    async def _body(self, request: web.Request) -> bytes:
        """The whole body, decompressed (gzip or deflate) as it arrives, within the size limit
        (counted after decompression) and the time limit."""
        limit = self._max_body_bytes
        too_large = RequestTooLarge(
            f"the request body is larger than {limit:,} bytes (LATENTWATCH_HTTP_MAX_BODY_BYTES, "
            "counted after decompression); send fewer rows per request"
        )
        decoder = _decoder(request.headers.get("Content-Encoding"))
        if decoder is None and (request.content_length or 0) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        timeout_s = self._settings.http_body_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                async for chunk in request.content.iter_chunked(_READ_CHUNK):
                    if decoder is not None:  # at most one byte past the limit comes out
                        chunk = decoder.decompress(chunk, limit - size + 1)
                        if decoder.unconsumed_tail:
                            raise too_large
                    size += len(chunk)
                    if size > limit:
                        raise too_large
                    chunks.append(chunk)
        except TimeoutError:
            raise StreamIdle(
                f"the request body did not arrive within {timeout_s:g} s "
                "(LATENTWATCH_HTTP_BODY_TIMEOUT_S)"
            ) from None
        except zlib.error as err:
            raise InvalidInput(
                f"the request body is not valid {_coding(request)} ({err})"
            ) from None
        if decoder is not None:
            if not decoder.eof:
                raise InvalidInput(f"the request body ends inside its {_coding(request)} stream")
            chunks.append(decoder.flush())
            if size + len(chunks[-1]) > limit:
                raise too_large
        return b"".join(chunks)

    async def _json_body(self, request: web.Request) -> Any:
        body = await self._body(request)
        return parse_json(body) if body.strip() else {}

    # --- the routes ------------------------------------------------------------------

    async def _live(self, request: web.Request) -> web.Response:
        if not self._kserve.server_live():
            return _error(503, "the server is not live")
        return web.Response(status=200)

    async def _ready(self, request: web.Request) -> web.Response:
        if not self._kserve.server_ready():
            return _error(503, "the server is not ready: models are loading or none is served")
        return web.Response(status=200)

    async def _server_metadata(self, request: web.Request) -> web.Response:
        return _json(plain(self._kserve.server_metadata()))

    async def _model_metadata(self, request: web.Request) -> web.Response:
        model, version = _model_of(request)
        return _json(plain(self._kserve.model_metadata(model, version)))

    async def _model_ready(self, request: web.Request) -> web.Response:
        model, version = _model_of(request)
        if not self._kserve.model_ready(model, version):
            return _error(503, f"model {model!r} is not ready")
        return web.Response(status=200)

    async def _model_config(self, request: web.Request) -> web.Response:
        model, version = _model_of(request)
        config = self._kserve.model_config(model, version)
        return _json(message_json(config))

    async def _statistics(self, request: web.Request) -> web.Response:
        model, version = _model_of(request)
        return _json(statistics_json(self._kserve.model_statistics(model, version)))

    async def _index(self, request: web.Request) -> web.Response:
        document = await self._json_body(request)
        ready = document.get("ready", False) if isinstance(document, dict) else None
        if not isinstance(ready, bool):
            raise InvalidInput("the repository index request must be {\"ready\": true|false}")
        return _json(plain(self._kserve.repository_index(ready)))

    async def _load(self, request: web.Request) -> web.Response:
        return await self._control(request, "load")

    async def _unload(self, request: web.Request) -> web.Response:
        return await self._control(request, "unload")

    async def _control(self, request: web.Request, action: str) -> web.Response:
        """ModelControl's load or unload of a whole model, as the gRPC RepositoryModelLoad and
        RepositoryModelUnload; versions load from the repository on disk, so a body with
        parameters (config overrides, files) is refused."""
        document = await self._json_body(request)
        parameters = (document.get("parameters") or {}) if isinstance(document, dict) else None
        # tritonclient's unload sends unload_dependents: a model here has no dependents.
        if not isinstance(parameters, dict) or set(parameters) - {"unload_dependents"}:
            raise InvalidInput(
                f"a model {action} takes no parameters here (versions load from the repository "
                "on disk)"
            )
        await self._core.model_control(action, request.match_info["model"])
        return web.Response(status=200)

    async def _infer(self, request: web.Request) -> web.Response:
        model, version = _model_of(request)
        body = await self._body(request)
        header = request.headers.get(BINARY_HEADER)
        # JSON text is slow to read and write (raw bytes are not): large JSON goes off the loop.
        json_bytes = int(header) if header is not None and header.isdigit() else len(body)
        large = min(json_bytes, len(body)) > _THREAD_PARSE_BYTES
        if large:
            parsed = await asyncio.to_thread(parse_infer, body, header, model, version)
        else:
            parsed = parse_infer(body, header, model, version)
        result = await self._kserve.infer(parsed.request)
        if large:
            content, json_length = await asyncio.to_thread(encode_infer, result, parsed)
        else:
            content, json_length = encode_infer(result, parsed)
        if json_length is None:
            return web.Response(body=content, content_type=JSON)
        response = web.Response(body=content, content_type=OCTETS)
        response.headers[BINARY_HEADER] = str(json_length)
        return response


def _coding(request: web.Request) -> str:
    return (request.headers.get("Content-Encoding") or "identity").strip().lower()


def _decoder(content_encoding: str | None) -> Any:
    """A zlib decompressor for the body's Content-Encoding; None for none. tritonclient sends
    gzip, or deflate in its zlib wrapper (which is what HTTP's "deflate" means)."""
    coding = (content_encoding or "identity").strip().lower()
    if coding == "identity":
        return None
    if coding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(zlib.MAX_WBITS | (16 if coding != "deflate" else 0))
    raise InvalidInput(
        f"Content-Encoding {quote(content_encoding)} is not supported; send gzip, deflate "
        "or an uncompressed body"
    )


def _response_coding(
    request: web.Request, response: web.StreamResponse
) -> web.ContentCoding | None:
    """gzip or deflate when the caller accepts it (tritonclient asks for one of them) and the
    body is not tiny; None: the body goes as it is."""
    body = getattr(response, "body", None)
    if not isinstance(body, bytes) or len(body) < _COMPRESS_MIN_BYTES:
        return None
    accepted = {
        part.split(";", 1)[0].strip().lower()
        for part in request.headers.get("Accept-Encoding", "").split(",")
    }
    for coding in (web.ContentCoding.gzip, web.ContentCoding.deflate):
        if coding.value in accepted:
            return coding
    return None


def _model_of(request: web.Request) -> tuple[str, str]:
    return request.match_info.get("model", ""), request.match_info.get("version", "")
