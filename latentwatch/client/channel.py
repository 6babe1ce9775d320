"""The client's gRPC channel: plaintext or TLS (mTLS with a client certificate), and a bearer
token sent as `authorization` metadata with every call.

TLS is on when a CA file or a client certificate is given; without a CA file the system's
trusted roots verify the server. The token comes from the `token` argument, else the
LATENTWATCH_TOKEN environment variable; none: calls go without one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from latentwatch.errors import InvalidInput, quote

logger = logging.getLogger(__name__)

TOKEN_ENV = "LATENTWATCH_TOKEN"
FileArg = str | os.PathLike[str]


def _read(what: str, path: FileArg) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise InvalidInput(f"{what} {quote(path)}: cannot read ({err.strerror})") from err


def read_token_file(path: FileArg) -> str:
    """The token in a file (its first non-blank line); the file holds nothing else."""
    text = _read("token file", path).decode("utf-8", "replace")
    token = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not token:
        raise InvalidInput(f"token file {quote(path)} is empty")
    return token


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call's metadata (also over plaintext,
    which gRPC's own call credentials refuse: a server on localhost may have tokens but no TLS)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> _CallDetails:
        return _CallDetails(
            details.method, details.timeout, [*(details.metadata or ()), self._header],
            details.credentials, details.wait_for_ready, details.compression,
        )

    def _intercept(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    intercept_unary_unary = _intercept
    intercept_unary_stream = _intercept
    intercept_stream_unary = _intercept
    intercept_stream_stream = _intercept


def open_channel(
    target: str,
    *,
    max_message_bytes: int,
    tls_ca: FileArg | None = None,
    tls_cert: FileArg | None = None,
    tls_key: FileArg | None = None,
    token: str | None = None,
) -> grpc.Channel:
    """A channel to `target`; InvalidInput for files that cannot be read or do not pair."""
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    if (tls_cert is None) != (tls_key is None):
        raise InvalidInput("a client certificate needs both tls_cert and tls_key")
    # Read before the channel exists, so a bad file leaves nothing open.
    tls = tls_ca is not None or tls_cert is not None
    if tls:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=None if tls_ca is None else _read("tls_ca", tls_ca),
            private_key=None if tls_key is None else _read("tls_key", tls_key),
            certificate_chain=None if tls_cert is None else _read("tls_cert", tls_cert),
        )
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    if token is None:
        return channel
    if not token.isascii() or not token.isprintable() or " " in token:
        channel.close()
        raise InvalidInput("the token holds characters gRPC metadata cannot carry")
    if not tls and not _is_loopback(target):
        logger.warning("sending a token to %s without TLS: anyone on the path can read it",
                       quote(target))
    return grpc.intercept_channel(channel, _BearerToken(token))


def _is_loopback(target: str) -> bool:
    host = target.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return target.startswith("unix:") or host in ("localhost", "127.0.0.1", "::1")
