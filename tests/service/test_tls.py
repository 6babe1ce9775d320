"""Transport security and connection limits of the real server over real channels.

Certificates are made here with `cryptography`: a CA, a server certificate for 127.0.0.1 and
localhost, client certificates; and a second, unrelated CA for the cases that must fail.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_harness import ServerThread, server_settings

from latentwatch.cli.main import main
from latentwatch.client.client import LatentwatchClient
from latentwatch.errors import LatentwatchError, NotReady
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.service.security import http_ssl_context
from latentwatch.service.server import server_options
from latentwatch.service.settings import Settings
from latentwatch.wire.tensors import to_tensor

TAB = "tab-ae"  # the synthetic repository's tabular model: 5 features
RELOAD_S = 0.2


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class Authority:
    """A CA that issues certificates into files of a directory."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name, self.directory = name, directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.pem = directory / f"{name}-ca.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, server: bool, expired: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start = now - dt.timedelta(days=3 if expired else 0, hours=1)
        end = now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=1)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(self.directory / f"{self.name}-{name}.pem",
                        self.directory / f"{self.name}-{name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
        return issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Authority]:
    directory = tmp_path_factory.mktemp("pki")
    return {"ca": Authority("ca", directory), "other": Authority("other", directory)}


@contextmanager
def serving(repo: Path, **overrides: object) -> Iterator[ServerThread]:
    server = ServerThread(server_settings(repo, **overrides))
    try:
        yield server
    finally:
        server.close()


def _target(server: ServerThread) -> str:
    return f"127.0.0.1:{server.running.port}"


def _health(channel: grpc.Channel) -> str:
    """"OK", or the status and details of the failed health check."""
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.RpcError as err:
        return f"{err.code().name}: {err.details()}"
    return "OK"


UNTRUSTED = "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate"
REFUSED = "UNAVAILABLE"  # the server ended the handshake: the client's certificate


def _health_over_tls(target: str, ca: Path, client: Issued | None = None) -> str:
    credentials = grpc.ssl_channel_credentials(
        ca.read_bytes(),
        None if client is None else client.key.read_bytes(),
        None if client is None else client.cert.read_bytes(),
    )
    with grpc.secure_channel(target, credentials) as channel:
        return _health(channel)


@pytest.fixture(scope="module")
def tls_server(synthetic_repo: Path, pki: dict[str, Authority]) -> Iterator[ServerThread]:
    issued = pki["ca"].issue("server", server=True)
    with serving(synthetic_repo, tls_cert=issued.cert, tls_key=issued.key) as server:
        yield server


def test_a_client_trusting_the_ca_scores_over_tls(
    tls_server: ServerThread, pki: dict[str, Authority]
) -> None:
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    with LatentwatchClient(_target(tls_server), tls_ca=pki["ca"].pem) as client:
        client.connect()
        result = client.score(TAB, x)
        assert result.score.shape == (4,)
        assert [m.name for m in client.list_models()] == ["img-vae", TAB]


def test_plaintext_and_untrusted_clients_cannot_reach_a_tls_port(
    tls_server: ServerThread, pki: dict[str, Authority]
) -> None:
    with grpc.insecure_channel(_target(tls_server)) as channel:
        assert _health(channel).startswith("UNAVAILABLE")
    assert UNTRUSTED in _health_over_tls(_target(tls_server), pki["other"].pem)
    with pytest.raises(NotReady, match="cannot connect"):
        with LatentwatchClient(_target(tls_server), tls_ca=pki["other"].pem) as client:
            client.connect()


def test_an_expired_server_certificate_is_refused_by_clients(
    synthetic_repo: Path, pki: dict[str, Authority], caplog: pytest.LogCaptureFixture
) -> None:
    expired = pki["ca"].issue("expired", server=True, expired=True)
    with caplog.at_level(logging.WARNING, "latentwatch.service.security"):
        with serving(synthetic_repo, tls_cert=expired.cert, tls_key=expired.key) as server:
            failed = _health_over_tls(_target(server), pki["ca"].pem)
    assert "CERTIFICATE_VERIFY_FAILED: certificate has expired" in failed
    assert any("expired" in r.getMessage() for r in caplog.records)


def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(
    synthetic_repo: Path, pki: dict[str, Authority]
) -> None:
    issued = pki["ca"].issue("mtls-server", server=True)
    good = pki["ca"].issue("client", server=False)
    foreign = pki["other"].issue("client", server=False)
    with serving(synthetic_repo, tls_cert=issued.cert, tls_key=issued.key,
                 tls_client_ca=pki["ca"].pem) as server:
        target = _target(server)
        assert _health_over_tls(target, pki["ca"].pem).startswith(REFUSED)
        assert _health_over_tls(target, pki["ca"].pem, foreign).startswith(REFUSED)
        assert _health_over_tls(target, pki["ca"].pem, good) == "OK"
        with LatentwatchClient(target, tls_ca=pki["ca"].pem, tls_cert=good.cert,
                               tls_key=good.key) as client:
            assert client.get_model(TAB).name == TAB


def _eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(RELOAD_S / 2)
    return check()


def test_a_renewed_certificate_reaches_new_connections_without_a_restart(
    synthetic_repo: Path, pki: dict[str, Authority], tmp_path: Path
) -> None:
    first = pki["ca"].issue("before", server=True)
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    with serving(synthetic_repo, tls_cert=cert, tls_key=key, tls_reload_s=RELOAD_S) as server:
        target = _target(server)
        assert _health_over_tls(target, pki["ca"].pem) == "OK"
        assert UNTRUSTED in _health_over_tls(target, pki["other"].pem)
        renewed = pki["other"].issue("after", server=True)
        cert.write_bytes(renewed.cert.read_bytes())
        key.write_bytes(renewed.key.read_bytes())
        assert _eventually(
            lambda: _health_over_tls(target, pki["other"].pem) == "OK"
        )
        assert UNTRUSTED in _health_over_tls(target, pki["ca"].pem)


def test_a_half_written_renewal_keeps_the_old_certificate(
    synthetic_repo: Path, pki: dict[str, Authority], tmp_path: Path
) -> None:
    first = pki["ca"].issue("kept", server=True)
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    with serving(synthetic_repo, tls_cert=cert, tls_key=key, tls_reload_s=RELOAD_S) as server:
        # The new certificate is written, its key not yet: the pair does not match.
        cert.write_bytes(pki["other"].issue("half", server=True).cert.read_bytes())
        time.sleep(3 * RELOAD_S)
        for _ in range(3):  # each new connection checks the files again
            assert _health_over_tls(_target(server), pki["ca"].pem) == "OK"


@pytest.mark.parametrize("problem", ["garbage cert", "key of another cert", "missing key",
                                     "cert without key", "client ca garbage"])
def test_unusable_certificate_files_stop_start_up_with_one_line(
    synthetic_repo: Path, pki: dict[str, Authority], tmp_path: Path, problem: str
) -> None:
    good = pki["ca"].issue("start", server=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    settings: dict[str, object] = {
        "garbage cert": dict(tls_cert=garbage, tls_key=good.key),
        "key of another cert": dict(
            tls_cert=good.cert, tls_key=pki["ca"].issue("another", server=True).key),
        "missing key": dict(tls_cert=good.cert, tls_key=tmp_path / "absent.key"),
        "cert without key": dict(tls_cert=good.cert),
        "client ca garbage": dict(tls_cert=good.cert, tls_key=good.key, tls_client_ca=garbage),
    }[problem]
    with pytest.raises(LatentwatchError) as caught:
        with serving(synthetic_repo, **settings):
            pass
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300
    assert "tls_" in message


def test_serve_cli_names_a_bad_key_in_one_line(
    synthetic_repo: Path, pki: dict[str, Authority], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = pki["ca"].issue("cli", server=True)
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    code = main(["serve", "--repo", str(synthetic_repo), "--port", "0", "--metrics-port", "0",
                 "--tls-cert", str(good.cert), "--tls-key", str(bad_key)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("latentwatch serve: error: tls_key")
    assert "not a PEM private key" in err[-1]


def test_score_cli_connects_over_mutual_tls(
    synthetic_repo: Path, pki: dict[str, Authority], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issued = pki["ca"].issue("cli-server", server=True)
    client = pki["ca"].issue("cli-client", server=False)
    data = tmp_path / "rows.npy"
    np.save(data, np.random.default_rng(1).normal(size=(10, 5)).astype(np.float32))
    with serving(synthetic_repo, tls_cert=issued.cert, tls_key=issued.key,
                 tls_client_ca=pki["ca"].pem) as server:
        args = ["score", "--server", _target(server), "--model", TAB, "--data", str(data),
                "--timeout", "5", "--tls-ca", str(pki["ca"].pem)]
        assert main([*args, "--out", str(tmp_path / "no-cert.csv")]) == 2
        assert "cannot connect" in capsys.readouterr().err
        assert main([*args, "--out", str(tmp_path / "out.csv"), "--tls-cert", str(client.cert),
                     "--tls-key", str(client.key)]) == 0
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 11  # header + 10 rows


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def _https_get(url: str, ca: Path, client: Issued | None = None) -> str:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as reply:
            return str(reply.read().decode())
    except (OSError, ssl.SSLError) as err:
        return f"failed: {err}"


def test_http_ssl_context_verifies_clients_and_reloads(
    pki: dict[str, Authority], tmp_path: Path
) -> None:
    first = pki["ca"].issue("http", server=True)
    cert, key = tmp_path / "http.pem", tmp_path / "http.key"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    client = pki["ca"].issue("http-client", server=False)
    context = http_ssl_context(Settings(tls_cert=cert, tls_key=key, tls_client_ca=pki["ca"].pem,
                                        tls_reload_s=RELOAD_S))
    assert context is not None
    assert http_ssl_context(Settings()) is None
    httpd = HTTPServer(("127.0.0.1", 0), _Ok)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{httpd.server_address[1]}/"
    try:
        assert _https_get(url, pki["ca"].pem, client) == "ok"
        assert _https_get(url, pki["ca"].pem).startswith("failed")  # no client certificate
        renewed = pki["other"].issue("http-renewed", server=True)
        cert.write_bytes(renewed.cert.read_bytes())
        key.write_bytes(renewed.key.read_bytes())
        assert _eventually(lambda: _https_get(url, pki["other"].pem, client) == "ok")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_metrics_are_served_over_tls_with_the_grpc_certificate(
    synthetic_repo: Path, pki: dict[str, Authority]
) -> None:
    issued = pki["ca"].issue("metrics", server=True)
    with serving(synthetic_repo, tls_cert=issued.cert, tls_key=issued.key) as server:
        url = f"https://127.0.0.1:{server.running.metrics_port}/metrics"
        assert "latentwatch_ready" in _https_get(url, pki["ca"].pem)
        with pytest.raises(OSError):
            urllib.request.urlopen(url.replace("https", "http"), timeout=5).read()


def test_calls_past_max_concurrent_rpcs_get_resource_exhausted(synthetic_repo: Path) -> None:
    release = threading.Event()

    def held_stream() -> Iterator[pb.BiasReportRequest]:
        release.wait(20)  # the call is open on the server, its first message not sent yet
        return
        yield

    x = np.zeros((2, 5), np.float32)
    with serving(synthetic_repo, max_concurrent_rpcs=2) as server:
        stub = pb_grpc.LatentwatchStub(server.channel)
        held = [stub.BiasReport.future(held_stream(), timeout=30) for _ in range(2)]
        try:
            assert _eventually(lambda: server.running.metrics.inflight >= 2)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Score(pb.ScoreRequest(model_name=TAB, input=to_tensor(x)), timeout=10)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            release.set()
        for call in held:
            call.exception(20)  # ended (an empty BiasReport is an error, which is fine here)

        def score_ok() -> bool:  # gRPC frees the slots of ended calls a moment later
            try:
                stub.Score(pb.ScoreRequest(model_name=TAB, input=to_tensor(x)), timeout=10)
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return False
            return True

        assert _eventually(score_ok)


def test_connection_options_come_from_the_settings() -> None:
    options = dict(server_options(Settings(keepalive_time_s=30, keepalive_timeout_s=5,
                                           max_connection_idle_s=120, shutdown_grace_s=3)))
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 5_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 30_000
    assert options["grpc.max_connection_idle_ms"] == 120_000
    assert "grpc.max_connection_age_ms" not in options  # 0: connections live on
    aged = dict(server_options(Settings(max_connection_age_s=900, shutdown_grace_s=3)))
    assert aged["grpc.max_connection_age_ms"] == 900_000
    assert aged["grpc.max_connection_age_grace_ms"] == 3_000


def test_an_idle_connection_is_closed_by_the_server(synthetic_repo: Path) -> None:
    states: list[grpc.ChannelConnectivity] = []
    with serving(synthetic_repo, max_connection_idle_s=0.5) as server:
        with grpc.insecure_channel(_target(server)) as channel:
            assert _health(channel) == "OK"
            channel.subscribe(states.append)
            # The server's GOAWAY takes the channel out of READY, with no call of ours.
            assert _eventually(lambda: states[-1:] == [grpc.ChannelConnectivity.IDLE])
            assert grpc.ChannelConnectivity.READY in states
