"""Bearer tokens with scopes and models, checked for every call by one server interceptor.

The token file (`settings.auth_tokens`) holds one JSON object a line; blank lines and lines
starting with "#" are skipped:

    {"name": "batch-job", "sha256": "<hex sha256 of the token>", "scopes": ["score", "read"],
     "models": ["digits-vae"]}

`models` is a list of model names or ["*"] (every model, also the default). Only hashes are
stored; `latentwatch token` makes a token and appends its line. The file is re-read when it
changes (checked on each call, a stat), so a token is revoked by deleting its line; a change that
cannot be parsed is logged and the previous tokens stay in force.

Callers send `authorization: Bearer <token>` metadata (HTTP: the `Authorization` header). No
token, or one the file does not hold: UNAUTHENTICATED. A known token without the method's scope,
or for another model (the request's `model_name`, or `name` in KServe's requests; for request
streams, the first message's and every later one that names a model): PERMISSION_DENIED. Health
(grpc.health.v1) and KServe's ServerLive and ServerReady are always open. Methods the table
below does not name need "admin", so a new method is closed until it is given a scope.
`authorize` is the one check, for gRPC (TokenAuth) and the KServe REST port alike.

The interceptor goes after ErrorsAndMetrics (service/interceptor.py) in the server's list, so a
refused call is counted in the request metrics with its status code, like any other error.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import inspect
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc

from latentwatch.errors import LatentwatchError, PermissionDenied, Unauthenticated, quote
from latentwatch.service.interceptor import Behavior, handler_parts, observed_message

log = logging.getLogger(__name__)

# The models the current call's token may use (None: every model), for listings that should
# show a caller only those (ListModels). Set by TokenAuth in the call's own context.
_CALLER_MODELS: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "latentwatch_caller_models", default=None
)


def caller_may_see(model: str) -> bool:
    """Whether the current call's token may use `model` (always, without authentication)."""
    models = _CALLER_MODELS.get()
    return models is None or model in models

SCOPES = ("score", "reports", "generate", "admin", "read")
ANY_MODEL = "*"
# Short method name -> the scope it needs.
# KServe v2 (inference.GRPCInferenceService, and the same names over REST): ServerLive and
# ServerReady are open like grpc.health (None); the rest as their latentwatch.v1 peers.
METHOD_SCOPES: dict[str, str | None] = {
    "Score": "score", "ScoreStream": "score", "Encode": "score",
    "BiasReport": "reports",
    "Generate": "generate", "Traverse": "generate", "Translate": "generate",
    "ModelControl": "admin",
    "ListModels": "read", "GetModel": "read",
    "ServerLive": None, "ServerReady": None,
    "ModelReady": "read", "ServerMetadata": "read", "ModelMetadata": "read",
    "ModelConfig": "read", "RepositoryIndex": "read", "ModelStatistics": "read",
    "ModelInfer": "score", "ModelStreamInfer": "score",
    "RepositoryModelLoad": "admin", "RepositoryModelUnload": "admin",
    "ServerReflectionInfo": "read",  # grpc.reflection (v1 and v1alpha), when it is on
}
# Methods that, naming no model, list only the models the caller's token may use.
LISTS_WHEN_UNNAMED = frozenset({"ModelStatistics"})
UNLISTED_SCOPE = "admin"
OPEN_SERVICES = frozenset({"grpc.health.v1.Health"})
_BEARER = "bearer "
_FileStamp = tuple[int, int, int]



def token_sha256(token: str) -> str:
    """The hex digest the token file stores for `token`."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A random token: 256 bits, URL-safe characters (valid in gRPC metadata)."""
    return "lw_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TokenEntry:
    """One line of the token file."""

    name: str
    sha256: bytes  # the digest itself, 32 bytes
    scopes: frozenset[str]
    models: frozenset[str]  # names, or {"*"}

    def allows_model(self, model: str) -> bool:
        return ANY_MODEL in self.models or model in self.models

    def to_line(self) -> str:
        return json.dumps({
            "name": self.name, "sha256": self.sha256.hex(),
            "scopes": sorted(self.scopes), "models": sorted(self.models),
        })


def make_entry(
    name: str, token: str, scopes: Iterable[str], models: Iterable[str] = (ANY_MODEL,)
) -> TokenEntry:
    """The entry of a new token; LatentwatchError for an empty name or an unknown scope."""
    entry = TokenEntry(name, bytes.fromhex(token_sha256(token)), frozenset(scopes),
                       frozenset(models) or frozenset({ANY_MODEL}))
    _check_entry(entry, "token")
    return entry


def _check_entry(entry: TokenEntry, where: str) -> None:
    if not entry.name:
        raise LatentwatchError(f"{where}: the name is empty")
    unknown = sorted(entry.scopes - set(SCOPES))
    if unknown or not entry.scopes:
        raise LatentwatchError(
            f"{where}: scopes {[quote(s) for s in unknown] or 'none'} are not known; "
            f"scopes are {', '.join(SCOPES)}"
        )
    if not entry.models or not all(isinstance(m, str) and m for m in entry.models):
        raise LatentwatchError(f"{where}: models must be model names or [\"*\"]")


def _entry_from_line(line: str, where: str) -> TokenEntry:
    try:
        data = json.loads(line)
        name, digest, scopes = data["name"], data["sha256"], data["scopes"]
        models = data.get("models", [ANY_MODEL])
        if not (isinstance(name, str) and isinstance(digest, str)
                and isinstance(scopes, list) and isinstance(models, list)):
            raise TypeError("name and sha256 are strings, scopes and models lists")
        sha256 = bytes.fromhex(digest)
        if len(sha256) != 32:
            raise ValueError("sha256 is not 64 hex digits")
        entry = TokenEntry(name, sha256, frozenset(scopes), frozenset(models))
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        problem = f"missing {err}" if isinstance(err, KeyError) else str(err)
        raise LatentwatchError(
            f"{where}: not a token entry {{\"name\", \"sha256\", \"scopes\", \"models\"}} "
            f"({quote(problem)})"
        ) from err
    _check_entry(entry, where)
    return entry


def parse_tokens(text: str, path: Path) -> tuple[TokenEntry, ...]:
    """Every entry of a token file; LatentwatchError names the file and line of a bad one."""
    entries: list[TokenEntry] = []
    names: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        entry = _entry_from_line(line, f"{quote(path)} line {number}")
        if entry.name in names:
            raise LatentwatchError(
                f"{quote(path)} line {number}: a second token named {quote(entry.name)}"
            )
        names.add(entry.name)
        entries.append(entry)
    return tuple(entries)


def read_tokens(path: Path) -> tuple[TokenEntry, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LatentwatchError(f"auth_tokens {quote(path)}: cannot read ({err})") from err
    return parse_tokens(text, path)


class TokenFile:
    """The entries of the token file, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._stat()
        self._entries = read_tokens(path)
        log.info("authentication on: %d tokens in %s", len(self._entries), quote(path))

    def _stat(self) -> _FileStamp | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def entries(self) -> tuple[TokenEntry, ...]:
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp  # a bad change is logged once, then tried again on the next
            try:
                self._entries = read_tokens(self.path)
                log.info("token file changed: %d tokens", len(self._entries))
            except LatentwatchError as err:
                log.error("token file changed but cannot be used, keeping the previous "
                          "tokens: %s", err)
        return self._entries

    def authenticate(self, token: str | None) -> TokenEntry:
        """The entry of `token`, compared in constant time with every entry's digest."""
        if not token:
            raise Unauthenticated(
                "this server needs a token: send metadata 'authorization: Bearer <token>'"
            )
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found: TokenEntry | None = None
        for entry in self.entries():  # no early exit: every entry is compared
            if hmac.compare_digest(entry.sha256, digest) and found is None:
                found = entry
        if found is None:
            raise Unauthenticated("unknown or revoked token")
        return found


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            if value[: len(_BEARER)].lower() == _BEARER:
                return value[len(_BEARER):].strip()
    return None


def scope_of(full_method: str) -> str | None:
    """The scope a method needs ("/pkg.Service/Method"); None: open to everyone."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    if service in OPEN_SERVICES:
        return None
    return method_scope(method)


def method_scope(method: str) -> str | None:
    """The scope a method needs by its short name ("ModelInfer"); None: open to everyone."""
    return METHOD_SCOPES.get(method, UNLISTED_SCOPE)


def requested_model(request: Any) -> str | None:
    """The model a request names (`model_name`, or `name` in KServe's metadata, ready, config
    and statistics requests); None when its message has no such field."""
    for field in ("model_name", "name"):
        model = getattr(request, field, None)
        if isinstance(model, str):
            return model
    return None


def authorize(
    tokens: TokenFile, token: str | None, method: str, model: str | None
) -> TokenEntry | None:
    """The entry of `token` if it may call `method` (short name) on `model` (None: the request
    names none; "": the request leaves it empty, e.g. a repository-wide call). None, with no
    token looked at, for an open method. Raises Unauthenticated or PermissionDenied with the
    caller's message. The one check for gRPC (TokenAuth) and HTTP: it also sets, in the current
    context, the models the caller may see in listings (`caller_may_see`)."""
    scope = method_scope(method)
    if scope is None:
        return None
    entry = tokens.authenticate(token)
    if scope not in entry.scopes:
        raise PermissionDenied(
            f"token {quote(entry.name)} lacks the {scope!r} scope that {method} needs"
        )
    _CALLER_MODELS.set(None if ANY_MODEL in entry.models else entry.models)
    check_model(entry, method, model)
    return entry


def check_model(entry: TokenEntry, method: str, model: str | None) -> None:
    """PermissionDenied unless `entry` may use `model` (see `authorize`)."""
    if model is None or entry.allows_model(model):
        return
    if not model:
        if method in LISTS_WHEN_UNNAMED:
            return
        raise PermissionDenied(f"token {quote(entry.name)} is limited to some models; name one")
    raise PermissionDenied(f"token {quote(entry.name)} may not use model {quote(model)}")


async def _raise(error: LatentwatchError) -> NoReturn:
    raise error


async def _refused(error: LatentwatchError) -> NoReturn:
    """Raises `error`, counted as one message of a per-message method (ScoreStream), whose call
    as a whole ErrorsAndMetrics does not count; for other methods the call is counted."""
    await observed_message(_raise(error))
    raise error  # not reached: observed_message re-raises


class TokenAuth(grpc.aio.ServerInterceptor):
    """Refuses calls without a known token, or without the scope or model the call needs."""

    def __init__(self, tokens: TokenFile) -> None:
        self._tokens = tokens
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        full_name = handler_call_details.method
        scope = scope_of(full_name)
        if handler is None or scope is None:
            return handler
        cached = self._wrapped.get(full_name)
        if cached is not None and cached[0] is handler:
            return cached[1]
        method = full_name.rsplit("/", 1)[-1]
        behavior, factory = handler_parts(handler)
        admit = self._admitter(method, handler.request_streaming)
        wrapped: Behavior
        if inspect.isasyncgenfunction(behavior):
            async def responses(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async for response in behavior(await admit(request, context), context):
                    yield response
            wrapped = responses
        else:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                return await behavior(await admit(request, context), context)
            wrapped = call
        intercepted = factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[full_name] = (handler, intercepted)
        return intercepted

    def _admitter(
        self, method: str, request_streaming: bool
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        """Checks a call; returns its request (or, for streams, its messages, the first one
        read already) for the handler."""

        def token_of(context: grpc.aio.ServicerContext) -> str | None:
            return bearer_token(context.invocation_metadata())

        async def admit(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                if not request_streaming:
                    authorize(self._tokens, token_of(context), method, requested_model(request))
                    return request
                # The token before any message is read, then the first message's model.
                entry = authorize(self._tokens, token_of(context), method, None)
                assert entry is not None  # open methods are not wrapped
                messages = request.__aiter__()
                try:
                    first = await messages.__anext__()
                except StopAsyncIteration:
                    return _no_messages()
                check_model(entry, method, requested_model(first))
            except (Unauthenticated, PermissionDenied) as err:
                log.debug("%s refused: %s", method, err)
                await _refused(err)
            return _checked(
                first, messages, lambda message: check_model(entry, method, message)
            )

        return admit


async def _no_messages() -> AsyncIterator[Any]:
    return
    yield


async def _checked(
    first: Any, rest: AsyncIterator[Any], check_model: Callable[[str], None]
) -> AsyncIterator[Any]:
    """The stream's messages again, the first one included. Later messages may name a model
    too (ScoreStream's may each name another): those that do are checked as well."""
    yield first
    async for message in rest:
        model = requested_model(message)
        if model:
            try:
                check_model(model)
            except PermissionDenied as err:
                await _refused(err)
        yield message
