"""The client against several real `latentwatch serve` processes: load balancing, failover when
one dies mid-stream (SIGKILL), retries of refused calls, no retry of bad ones, deadlines."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client.parser import text_string_to_metric_families

from latentwatch.client.client import LatentwatchClient, RetryPolicy, ScoreResult, StreamPolicy
from latentwatch.errors import InvalidInput, LatentwatchError, QueueFull

VAE = "digits-vae"
N_ROWS = 50_000
CHUNK_ROWS = 250
FAST_RETRY = dict(max_attempts=60, backoff_initial_s=0.01, backoff_max_s=0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One `latentwatch serve` process on free ports, its output in a log file."""

    def __init__(self, repo: Path, log: Path) -> None:
        self.port, self.metrics_port, self.log = _free_port(), _free_port(), log
        command = [sys.executable, "-m", "latentwatch", "serve", "--repo", str(repo),
                   "--port", str(self.port), "--metrics-port", str(self.metrics_port)]
        env = {**os.environ, "LATENTWATCH_INTRA_OP_THREADS": "1", "LATENTWATCH_HTTP_PORT": "-1"}
        self.process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                        env=env)
        self.target = f"127.0.0.1:{self.port}"

    def metric(self, sample: str, **labels: str) -> float:
        """The sum of the samples named `sample` whose labels include `labels`."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == sample and labels.items() <= s.labels.items()
        )

    def wait_serving(self) -> None:
        with LatentwatchClient(self.target, timeout_s=5.0) as client:
            deadline = time.monotonic() + 90
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    client.wait_ready(2.0)
                    return
                except LatentwatchError:
                    pass
        raise AssertionError(f"{self.target} never served:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture(scope="module")
def servers(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    logs = tmp_path_factory.mktemp("servers")
    started = [Server(model_repo, logs / f"server{i}.log") for i in range(2)]
    try:
        for server in started:
            server.wait_serving()
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def rows() -> NDArray[np.float64]:
    """N_ROWS distinct rows: the digits with noise, so a shifted or repeated row shows."""
    from latentwatch.data import load_source

    digits = load_source("digits").X  # (1797, 64)
    noise = np.random.default_rng(0).uniform(0.0, 1.0, (N_ROWS, digits.shape[1]))
    return np.tile(digits, (-(-N_ROWS // len(digits)), 1))[:N_ROWS] + noise


def _chunks(X: NDArray, rows: int) -> Iterator[NDArray]:
    for start in range(0, X.shape[0], rows):
        yield X[start : start + rows]


def _scored(server: Server, method: str) -> float:
    return server.metric("latentwatch_requests_total", method=method, code="OK")


def test_one_target_with_several_addresses_balances_every_call(servers: list[Server]) -> None:
    """The round_robin service config: before, pick_first sent every call to one address."""
    target = "ipv4:" + ",".join(s.target for s in servers)
    before = [_scored(s, "Score") for s in servers]
    X = np.zeros((10, 64))
    with LatentwatchClient(target) as client:
        client.wait_ready(10.0)
        for _ in range(20):
            client.score(VAE, X)
    gained = [_scored(s, "Score") - b for s, b in zip(servers, before, strict=True)]
    assert sum(gained) == 20 and min(gained) >= 5, gained


def test_a_list_of_servers_takes_them_in_turn(servers: list[Server]) -> None:
    before = [_scored(s, "Score") for s in servers]
    with LatentwatchClient(",".join(s.target for s in servers)) as client:
        client.wait_ready(10.0)
        for _ in range(10):
            client.score(VAE, np.zeros((3, 64)))
    gained = [_scored(s, "Score") - b for s, b in zip(servers, before, strict=True)]
    assert gained == [5, 5]


def test_invalid_argument_is_answered_once_not_retried(servers: list[Server]) -> None:
    def refused() -> float:
        return sum(s.metric("latentwatch_requests_total", method="Score",
                            code="INVALID_ARGUMENT") for s in servers)

    before = refused()
    retry = RetryPolicy(**FAST_RETRY)  # type: ignore[arg-type]
    with LatentwatchClient([s.target for s in servers], retry=retry) as client:
        with pytest.raises(InvalidInput):
            client.score(VAE, np.zeros((4, 7)))  # 7 features; the model takes 64
    assert refused() - before == 1


def test_a_deadline_that_passes_says_so(servers: list[Server]) -> None:
    with LatentwatchClient(servers[0].target, timeout_s=0.001) as client:
        with pytest.raises(LatentwatchError, match=r"Score on .*no answer within the 0.001 s "
                                                   r"deadline \(timeout_s"):
            client.score(VAE, np.zeros((20_000, 64)))


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA, and its key."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_and_a_token_reach_every_server_of_a_list(
    model_repo: Path, serve: Callable[..., AbstractContextManager[str]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from latentwatch.cli.main import main
    from latentwatch.errors import Unauthenticated

    cert, key = _self_signed(tmp_path)
    tokens = tmp_path / "tokens.txt"
    assert main(["token", "--tokens-file", str(tokens), "--name", "pipeline",
                 "--scopes", "score,read"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    secured = dict(tls_cert=cert, tls_key=key, auth_tokens=tokens)
    with serve(model_repo, **secured) as first, serve(model_repo, **secured) as second:
        with LatentwatchClient([first, second], tls_ca=cert, token=token) as client:
            client.wait_ready(30.0)
            for _ in range(4):  # two on each server
                assert client.score(VAE, np.zeros((3, 64))).score.shape == (3,)
        for target in (first, second):
            with LatentwatchClient(target, tls_ca=cert, token="wrong") as client:
                with pytest.raises(Unauthenticated):
                    client.score(VAE, np.zeros((3, 64)))


def test_refused_calls_are_retried_until_they_succeed(
    model_repo: Path, serve: Callable[..., AbstractContextManager[str]],
    rows: NDArray, caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that takes two calls at a time refuses the others (RESOURCE_EXHAUSTED)."""
    X = rows[:200]
    results: list[ScoreResult] = []
    errors: list[Exception] = []

    def hammer(client: LatentwatchClient) -> None:
        try:
            for _ in range(3):
                results.append(client.score(VAE, X))
        except Exception as err:  # noqa: BLE001 - collected, asserted below
            errors.append(err)

    def run(client: LatentwatchClient) -> None:
        threads = [threading.Thread(target=hammer, args=(client,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)

    retry = RetryPolicy(max_attempts=100, backoff_initial_s=0.01, backoff_max_s=0.5)
    with serve(model_repo, max_concurrent_rpcs=2) as target:
        with LatentwatchClient(target, retry=RetryPolicy(max_attempts=1)) as client:
            run(client)
        assert errors and all(isinstance(e, QueueFull) for e in errors), errors
        results.clear()
        errors.clear()
        caplog.set_level(logging.WARNING, logger="latentwatch.client.retry")
        with LatentwatchClient(target, retry=retry) as client:
            expected = client.score(VAE, X)
            run(client)
    assert not errors and len(results) == 12
    assert any("RESOURCE_EXHAUSTED" in r.getMessage() for r in caplog.records)
    for result in results:
        np.testing.assert_allclose(result.score, expected.score, rtol=1e-6)


def test_the_score_cli_takes_a_list_of_servers_and_retry_flags(
    servers: list[Server], tmp_path: Path
) -> None:
    from latentwatch.cli.main import main

    out = tmp_path / "scores.csv"
    before = sum(s.metric("latentwatch_rows_scored_total") for s in servers)
    argv = ["score", "--server", ",".join(s.target for s in servers), "--model", VAE,
            "--data", "digits", "--out", str(out), "--retries", "3", "--backoff-initial", "0.05",
            "--backoff-max", "0.5"]
    assert main(argv) == 0
    assert len(out.read_text().splitlines()) == 1 + 1797
    # Every row scored once, on one server or the other.
    assert sum(s.metric("latentwatch_rows_scored_total") for s in servers) - before == 1797


def test_a_server_killed_mid_stream_loses_no_row(
    servers: list[Server], rows: NDArray, caplog: pytest.LogCaptureFixture
) -> None:
    """50,000 rows streamed over two servers; the one holding the stream is SIGKILLed after
    15,000 rows. Every row comes back once, in order, with the score of a reference run.
    (Runs last in this module: it leaves one server.)"""
    with LatentwatchClient(servers[1].target) as client:
        reference = client.score(VAE, rows, batch_rows=5000)
    before = [s.metric("latentwatch_rows_scored_total") for s in servers]
    policy = StreamPolicy(max_in_flight_rows=2000, rows_per_stream=4000, **FAST_RETRY)  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING, logger="latentwatch.client.streaming")
    parts: list[ScoreResult] = []
    killed: Server | None = None
    gained_before_kill: list[float] = []
    with LatentwatchClient([s.target for s in servers], stream_policy=policy) as client:
        for part in client.score_stream(VAE, _chunks(rows, CHUNK_ROWS)):
            parts.append(part)
            if killed is None and len(parts) * CHUNK_ROWS >= 15_000:
                gained_before_kill = [s.metric("latentwatch_rows_scored_total") - b
                                      for s, b in zip(servers, before, strict=True)]
                # The server holding the stream now (none between two streams: try again).
                busy = [s for s in servers if s.metric("latentwatch_inflight_requests") > 0]
                if busy:
                    killed = busy[0]
                    killed.process.send_signal(signal.SIGKILL)
                    killed.process.wait(10)
    combined = ScoreResult.concat(parts)
    assert killed is not None and len(parts) == N_ROWS // CHUNK_ROWS
    assert min(gained_before_kill) > 0, gained_before_kill  # both servers had scored rows
    assert any("retrying the unanswered rows" in r.getMessage() for r in caplog.records)
    assert len(combined) == N_ROWS
    np.testing.assert_allclose(combined.score, reference.score, rtol=1e-6)
    np.testing.assert_array_equal(combined.is_outlier, reference.is_outlier)
