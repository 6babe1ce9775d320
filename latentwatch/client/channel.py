"""The client's gRPC channels: plaintext or TLS (mTLS with a client certificate), a bearer
token sent as `authorization` metadata with every call, and load balancing over several servers.

Every channel uses gRPC's round_robin policy (service config), so a target that resolves to
several addresses (`dns:///latentwatch-headless:50051` for a headless Service, whose DNS name
lists every ready pod) spreads calls over all of them, and keepalive pings notice a server that
vanished without closing its connections. Several targets (`["host1:50051", "host2:50051"]`)
get one channel each, with the same TLS and token, taken in turn by ChannelPool.

TLS is on when a CA file or a client certificate is given; without a CA file the system's
trusted roots verify the server. The token comes from the `token` argument, else the
LATENTWATCH_TOKEN environment variable; none: calls go without one.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from latentwatch.errors import InvalidInput, quote

logger = logging.getLogger(__name__)

TOKEN_ENV = "LATENTWATCH_TOKEN"
FileArg = str | os.PathLike[str]

# The server accepts pings no more often than its own keepalive (LATENTWATCH_KEEPALIVE_TIME_S,
# 60 s by default); more often and it closes the connection (too_many_pings).
KEEPALIVE_S = 60.0
KEEPALIVE_TIMEOUT_S = 20.0
# round_robin: a call goes to the next READY address the resolver gave; addresses that fail
# are left out until they reconnect. Service configs in DNS TXT records are not read.
SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
_FAILED = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)
# These schemes take a comma-separated address list of their own (gRPC target syntax).
_LIST_SCHEMES = ("ipv4:", "ipv6:")


def parse_targets(targets: str | Sequence[str]) -> list[str]:
    """Targets from a list or a comma-separated string ("h1:50051,h2:50051"); an ipv4:/ipv6:
    target keeps its own comma-separated addresses. InvalidInput when none is named."""
    if isinstance(targets, str):
        text = targets.strip()
        parts = [text] if text.startswith(_LIST_SCHEMES) else text.split(",")
    else:
        parts = list(targets)
    names = [p.strip() for p in parts if p.strip()]
    if not names:
        raise InvalidInput(f"no server address in {quote(targets)}")
    return names


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
    keepalive_s: float = KEEPALIVE_S,
) -> grpc.Channel:
    """A channel to `target`; InvalidInput for files that cannot be read or do not pair."""
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.service_config", SERVICE_CONFIG),
        ("grpc.service_config_disable_resolution", 1),
        # Pings only while calls are in flight (the server refuses others).
        ("grpc.keepalive_time_ms", max(1, round(keepalive_s * 1000))),
        ("grpc.keepalive_timeout_ms", round(KEEPALIVE_TIMEOUT_S * 1000)),
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


class ChannelPool:
    """One channel per target; `pick` takes them in turn, skipping those whose connection failed
    while another has not (calls go around a dead server at once instead of after a backoff)."""

    def __init__(self, targets: Sequence[str], open_one: Callable[[str], grpc.Channel]) -> None:
        self.targets = list(targets)
        self.channels: list[grpc.Channel] = []
        try:
            for target in self.targets:
                self.channels.append(open_one(target))
        except BaseException:
            self.close()
            raise
        self._lock = threading.Lock()
        self._next = 0
        self._states = [grpc.ChannelConnectivity.IDLE] * len(self.channels)
        self._watchers: list[Callable[[grpc.ChannelConnectivity], None]] = []
        if len(self.channels) > 1:
            for i, channel in enumerate(self.channels):
                self._watchers.append(self._watcher(i))
                channel.subscribe(self._watchers[-1], try_to_connect=True)

    def _watcher(self, index: int) -> Callable[[grpc.ChannelConnectivity], None]:
        def update(state: grpc.ChannelConnectivity) -> None:
            self._states[index] = state

        return update

    def pick(self) -> int:
        """The index of the channel for the next call."""
        with self._lock:
            n = len(self.channels)
            order = [(self._next + k) % n for k in range(n)]
            usable = [i for i in order if self._states[i] not in _FAILED]
            chosen = usable[0] if usable else order[0]
            self._next = (chosen + 1) % n
            return chosen

    def close(self) -> None:
        for channel, watcher in zip(self.channels, getattr(self, "_watchers", ()), strict=False):
            channel.unsubscribe(watcher)
        for channel in self.channels:
            channel.close()
