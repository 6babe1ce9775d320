"""KServe v2 REST limits, TLS and tokens on the real server: the body limit (also compressed),
idle and slow connections, the concurrency slots, mutual TLS, bearer tokens, and the port
itself (taken, or off)."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import gevent.ssl
import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from server_harness import ServerThread, server_settings
from test_kserve_rest import TAB, _input, _raw, _requests, _rows, _score, _status, _url
from test_tls import Authority

from latentwatch.errors import LatentwatchError
from latentwatch.service.auth import make_entry, new_token


@pytest.fixture(scope="module")
def limited(synthetic_repo: Path) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(
        synthetic_repo, http_port=0, http_max_body_bytes=8192, http_max_concurrent=1,
        http_idle_timeout_s=0.5, http_body_timeout_s=1.0,
    ))
    yield running
    running.close()


def test_a_body_past_the_limit_is_413_also_when_compressed(limited: ServerThread) -> None:
    with httpclient.InferenceServerClient(_url(limited)) as c:
        assert c.infer(TAB, [_input(_rows(8), binary=True)]).as_numpy("score").shape == (8,)
        status, message = _status(lambda: c.infer(TAB, [_input(_rows(1024), binary=True)]))
        assert status == "413" and "LATENTWATCH_HTTP_MAX_BODY_BYTES" in message
        zeros = np.zeros((2048, 5), np.float32)  # 40 KB, gzipped to well under 8 KB
        assert len(gzip.compress(zeros.tobytes())) < 8192
        status, message = _status(lambda: c.infer(
            TAB, [_input(zeros, binary=True)], request_compression_algorithm="gzip"))
        assert status == "413" and "after decompression" in message
        assert c.is_server_ready()


def test_idle_and_slow_connections_are_closed_and_the_slot_limit_holds(
    limited: ServerThread,
) -> None:
    port = limited.running.http_port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
        idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost:")  # a head that never ends
        start = time.monotonic()
        assert idle.recv(1024) == b""  # closed by the server
        assert time.monotonic() - start < 4
    slow = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:  # holds the one request slot while its body trickles in
        slow.sendall(b"POST /v2/models/tab-ae/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        time.sleep(0.2)
        with httpclient.InferenceServerClient(_url(limited)) as c:
            status, message = _status(lambda: c.get_model_metadata(TAB))
            assert status == "429" and "LATENTWATCH_HTTP_MAX_CONCURRENT" in message
            assert c.is_server_live()  # health needs no slot
        reply = slow.recv(4096)  # the body never came: 408 once the body timeout passes
        assert reply.startswith(b"HTTP/1.1 408") and b"LATENTWATCH_HTTP_BODY_TIMEOUT_S" in reply
    finally:
        slow.close()
    with httpclient.InferenceServerClient(_url(limited)) as c:
        assert c.get_model_metadata(TAB)["name"] == TAB


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority("rest-ca", tmp_path_factory.mktemp("rest-pki"))


def test_tls_and_mutual_tls_on_the_rest_port(synthetic_repo: Path, pki: Authority) -> None:
    issued = pki.issue("rest-server", server=True)
    good = pki.issue("rest-client", server=False)
    running = ServerThread(server_settings(
        synthetic_repo, http_port=0, tls_cert=issued.cert, tls_key=issued.key,
        tls_client_ca=pki.pem,
    ))
    try:
        x = _rows(4)

        def context(**_: object) -> gevent.ssl.SSLContext:
            made = gevent.ssl.create_default_context(cafile=str(pki.pem))
            made.load_cert_chain(str(good.cert), str(good.key))
            return made

        with httpclient.InferenceServerClient(
            _url(running), ssl=True, ssl_context_factory=context
        ) as c:
            assert c.infer(TAB, [_input(x, True)]).as_numpy("score").shape == (4,)
        async def live(with_certificate: bool) -> str:
            made = ssl.create_default_context(cafile=str(pki.pem))
            if with_certificate:
                made.load_cert_chain(str(good.cert), str(good.key))
            async with aiohttpclient.InferenceServerClient(
                _url(running), ssl=True, ssl_context=made
            ) as c:
                try:
                    return "answered" if await c.is_server_live() else "not live"
                except Exception as err:  # the server ends the handshake
                    return type(err).__name__

        assert asyncio.run(live(with_certificate=True)) == "answered"
        # TLS 1.3: the client's side of the handshake ends before the server checks it.
        assert asyncio.run(live(with_certificate=False)) in (
            "ServerDisconnectedError", "ClientOSError", "ClientConnectorSSLError")
        reply = _raw(running.running.http_port, b"GET /v2/health/live HTTP/1.1\r\n\r\n")
        assert not reply.startswith(b"HTTP/")  # plaintext gets no HTTP answer
    finally:
        running.close()


def test_tokens_on_the_rest_port(synthetic_repo: Path, tmp_path: Path) -> None:
    scorer, reader, admin = new_token(), new_token(), new_token()
    path = tmp_path / "tokens.jsonl"
    path.write_text("\n".join([
        make_entry("scorer", scorer, ["score", "read"]).to_line(),
        make_entry("reader", reader, ["read"]).to_line(),
        make_entry("admin", admin, ["admin", "read"]).to_line(),
    ]) + "\n")
    running = ServerThread(server_settings(synthetic_repo, http_port=0, auth_tokens=path))
    try:
        with httpclient.InferenceServerClient(_url(running)) as c:
            assert c.is_server_live() and c.is_server_ready()  # health is open
            x = [_input(_rows(2), True)]
            status, message = _status(lambda: c.infer(TAB, x))
            assert status == "401" and "token" in message
            status, _ = _status(lambda: c.infer(TAB, x, headers={"Authorization": "Bearer no"}))
            assert status == "401"
            status, message = _status(lambda: c.infer(
                TAB, x, headers={"Authorization": f"Bearer {reader}"}))
            assert status == "403" and "'score'" in message
            assert _requests(running, "ModelInfer", "PERMISSION_DENIED") == 1
            result = c.infer(TAB, x, headers={"Authorization": f"Bearer {scorer}"})
            assert result.as_numpy("score").shape == (2,)
            meta = c.get_model_metadata(TAB, headers={"Authorization": f"Bearer {reader}"})
            assert meta["name"] == TAB
            as_reader, as_admin = ({"Authorization": f"Bearer {t}"} for t in (reader, admin))
            status, message = _status(lambda: c.unload_model(TAB, headers=as_reader))
            assert status == "403" and "'admin'" in message
            c.unload_model(TAB, headers=as_admin)
            assert not c.is_model_ready(TAB, headers=as_admin)
            status, message = _status(lambda: c.infer(
                TAB, x, headers={"Authorization": f"Bearer {scorer}"}))
            assert status == "404" and TAB in message
            c.load_model(TAB, headers=as_admin)
            assert c.is_model_ready(TAB, headers=as_admin)
    finally:
        running.close()


def test_a_taken_rest_port_is_a_clear_error_and_minus_one_turns_rest_off(
    synthetic_repo: Path,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(LatentwatchError, match=f"cannot serve KServe REST on 127.0.0.1:{port}"):
            ServerThread(server_settings(synthetic_repo, http_port=port))
    running = ServerThread(server_settings(synthetic_repo, http_port=-1))
    try:
        assert running.running.http_port == -1
        assert _score(running, _rows(2)).score  # gRPC serves as before
    finally:
        running.close()
