"""The metrics port cannot be turned against the service: connections past the cap are closed at
once, half-sent heads and peers that do not read are dropped after their timeouts, gRPC health
stays fast meanwhile, only GET/HEAD /metrics answer 200, and with a TLS context it speaks only
HTTPS."""

from __future__ import annotations

import datetime
import gzip
import http.client
import ipaddress
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from server_harness import ServerThread, server_settings

from latentwatch.service.metrics import ServiceMetrics
from latentwatch.service.metrics_http import HttpLimits

HOST = "127.0.0.1"
HALF_SENT = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: tex"  # and then nothing
DEFAULT_CAP = HttpLimits().max_connections


@pytest.fixture(scope="module")
def server(synthetic_repo: Path) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(synthetic_repo))
    yield running
    running.close()


@pytest.fixture
def short_limits() -> HttpLimits:
    return HttpLimits(max_connections=8, head_timeout_s=0.5, request_timeout_s=1.5)


def half_sent(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        sock = socket.create_connection((HOST, port), timeout=10)
        try:
            sock.sendall(HALF_SENT)
        except OSError:  # already closed by the server: counted as closed below
            pass
        socks.append(sock)
    return socks


def closed_by_server(socks: list[socket.socket], wait_s: float) -> list[socket.socket]:
    """The sockets the server closes (EOF or reset) within `wait_s`."""
    closed: list[socket.socket] = []
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + wait_s
        while len(closed) < len(socks) and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                try:
                    ended = ready.recv(65536) == b""
                except OSError:
                    ended = True
                if ended:
                    selector.unregister(ready)
                    closed.append(ready)
    return closed


def close_all(socks: Iterable[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def request(
    port: int, method: str = "GET", path: str = "/metrics", headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
    else:
        conn = http.client.HTTPSConnection(HOST, port, timeout=10, context=context)
    try:
        conn.request(method, path, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, reply.headers, reply.read()
    finally:
        conn.close()


def scrape_when_free(port: int, wait_s: float, **kwargs: object) -> bytes:
    """GET /metrics, retried while the server is still dropping the connections of a test."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            status, _, body = request(port, **kwargs)  # type: ignore[arg-type]
            assert status == 200
            return body
        except (OSError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def metric_names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def test_300_half_sent_connections_neither_stall_health_nor_hold_more_than_the_cap(
    server: ServerThread,
) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    check = health_pb2.HealthCheckRequest(service="")
    latencies_s: list[float] = []
    flooded = threading.Event()

    def check_health() -> None:
        while not flooded.is_set():
            start = time.perf_counter()
            reply = health.Check(check, timeout=30)
            latencies_s.append(time.perf_counter() - start)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            time.sleep(0.005)

    checker = threading.Thread(target=check_health)
    checker.start()
    socks: list[socket.socket] = []
    try:
        socks = half_sent(server.running.metrics_port, 300)
        closed = closed_by_server(socks, wait_s=1.0)
        time.sleep(0.5)  # health keeps being asked while the held connections wait
    finally:
        flooded.set()
        checker.join(30)
        close_all(socks)
    held = len(socks) - len(closed)
    assert held <= DEFAULT_CAP and len(closed) >= 300 - DEFAULT_CAP, (held, len(closed))
    assert len(latencies_s) >= 20
    p99_s = float(np.quantile(latencies_s, 0.99))
    assert p99_s < 0.5, f"health p99 {p99_s:.3f} s over {len(latencies_s)} checks"
    # The slots free up once the flood goes away: a scrape gets through again.
    assert b"latentwatch_ready" in scrape_when_free(server.running.metrics_port, wait_s=10)


def test_get_and_head_metrics_answer_the_exposition_in_the_format_asked_for(
    server: ServerThread,
) -> None:
    port = server.running.metrics_port
    status, headers, body = request(port)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    names = metric_names(body.decode())
    assert {"latentwatch_ready", "latentwatch_requests", "latentwatch_model_loaded",
            "latentwatch_rows_scored", "process_resident_memory_bytes"} <= names
    status, head_headers, head_body = request(port, "HEAD")
    assert (status, head_body) == (200, b"")
    assert abs(int(head_headers["Content-Length"]) - len(body)) < 200  # the same, give or take
    _, headers, body = request(port, headers={"Accept": "application/openmetrics-text"})
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    _, headers, body = request(port, headers={"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert "latentwatch_ready" in metric_names(gzip.decompress(body).decode())


def test_other_paths_are_404_and_other_methods_405_with_small_bodies(
    server: ServerThread,
) -> None:
    port = server.running.metrics_port
    for path in ("/", "/other", "/metrics/x", "/metricsx", "//metrics"):
        status, _, body = request(port, path=path)
        assert status == 404 and len(body) < 100, (path, status, body)
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "TRACE"):
        status, headers, body = request(port, method)
        assert status == 405 and len(body) < 100, (method, status, body)
        assert headers["Allow"] == "GET, HEAD"
    status, _, _ = request(port, path="/metrics?name[]=latentwatch_ready")
    assert status == 200


def test_malformed_and_oversized_heads_get_400_and_431(server: ServerThread) -> None:
    def raw(head: bytes) -> bytes:
        with socket.create_connection((HOST, server.running.metrics_port), timeout=10) as sock:
            sock.sendall(head)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
            return reply

    assert raw(b"\x16\x03\x01 hello\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(b"GET /metrics HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n"
    assert raw(huge).startswith(b"HTTP/1.1 431 ")


def test_a_head_that_does_not_arrive_in_time_is_closed_even_when_it_trickles(
    short_limits: HttpLimits,
) -> None:
    metrics = ServiceMetrics(short_limits)
    port = metrics.serve(0, HOST)
    try:
        start = time.monotonic()
        socks = half_sent(port, 3)
        trickling = socket.create_connection((HOST, port), timeout=10)
        socks.append(trickling)
        with selectors.DefaultSelector() as selector:
            selector.register(trickling, selectors.EVENT_READ)
            for byte in HALF_SENT * 10:  # a byte every 50 ms: each read is "in time"
                if selector.select(0.05):
                    break
                try:
                    trickling.send(bytes([byte]))
                except OSError:
                    break
        closed = closed_by_server(socks, wait_s=5.0)
        ended_s = time.monotonic() - start
        assert len(closed) == len(socks)
        # Closed by the head timeout (0.5 s), not at once and not after the trickle ran out.
        assert 0.4 < ended_s < 3.0, ended_s
        close_all(socks)
        assert b"latentwatch_ready" in scrape_when_free(port, wait_s=5)
    finally:
        metrics.close()


class _HugeOnceCollector:
    """A first scrape of 16 MB, more than the loopback socket buffers hold for a peer that does
    not read; small ones after it."""

    def __init__(self) -> None:
        self.pad_chars = 16_000_000

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("huge", "a big exposition", labels=["pad"])
        family.add_metric(["x" * self.pad_chars], 1.0)
        self.pad_chars = 1
        yield family


def test_a_peer_that_does_not_read_holds_its_slot_until_the_request_timeout_only() -> None:
    metrics = ServiceMetrics(HttpLimits(max_connections=1, head_timeout_s=0.5,
                                        request_timeout_s=1.5))
    metrics.registry.register(_HugeOnceCollector())  # type: ignore[arg-type]
    port = metrics.serve(0, HOST)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        stuck.settimeout(10)
        stuck.connect((HOST, port))
        start = time.monotonic()
        stuck.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        time.sleep(0.8)  # past the head timeout: only the request timeout can free it now
        second = half_sent(port, 1)
        assert closed_by_server(second, wait_s=0.3) == second  # the one slot is taken
        close_all(second)
        scrape_when_free(port, wait_s=10)  # free again once the request timeout drops it
        assert time.monotonic() - start > 1.0
        stuck.settimeout(5)
        received = 0
        try:
            while chunk := stuck.recv(1 << 20):
                received += len(chunk)
        except OSError:
            pass
        assert received < 16_000_000  # dropped mid-body, not sent in full
    finally:
        stuck.close()
        metrics.close()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path


def test_with_a_tls_context_it_speaks_https_only_and_times_out_silent_handshakes(
    tmp_path: Path, short_limits: HttpLimits,
) -> None:
    cert, key = _self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    metrics = ServiceMetrics(short_limits)
    port = metrics.serve(0, HOST, ssl_context=server_context)
    try:
        status, _, body = request(port, context=client_context)
        assert status == 200 and "latentwatch_ready" in metric_names(body.decode())
        status, _, _ = request(port, path="/other", context=client_context)
        assert status == 404
        with pytest.raises((http.client.HTTPException, OSError)):
            request(port)  # plain HTTP to the HTTPS port
        silent = [socket.create_connection((HOST, port), timeout=10)]  # no ClientHello
        start = time.monotonic()
        assert closed_by_server(silent, wait_s=5.0) == silent
        assert 0.3 < time.monotonic() - start < 3.0
        close_all(silent)
    finally:
        metrics.close()


def test_close_is_prompt_and_drops_every_connection() -> None:
    metrics = ServiceMetrics()  # default limits: a half-sent head would wait 5 s
    port = metrics.serve(0, HOST)
    socks = half_sent(port, 10)
    try:
        start = time.monotonic()
        metrics.close()
        assert time.monotonic() - start < 2.0
        assert len(closed_by_server(socks, wait_s=2.0)) == len(socks)
        with pytest.raises(OSError):
            socket.create_connection((HOST, port), timeout=2).close()
    finally:
        close_all(socks)
        metrics.close()  # a second close is harmless


def test_a_scrape_gets_through_while_slow_senders_hold_every_slot(server: ServerThread) -> None:
    port = server.running.metrics_port
    socks = half_sent(port, 2 * DEFAULT_CAP)  # more half-sent requests than the cap
    try:
        for _ in range(3):  # each scrape drops the oldest slow sender for itself
            status, _, body = request(port)
            assert status == 200 and b"latentwatch_ready" in body
        held = len(socks) - len(closed_by_server(socks, wait_s=1.0))
        assert held <= DEFAULT_CAP
    finally:
        close_all(socks)
