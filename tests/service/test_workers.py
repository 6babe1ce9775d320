"""`latentwatch serve --workers N` as real processes: N servers share the gRPC port through
SO_REUSEPORT and each answers calls (counted on its own metrics port, metrics_port + i); SIGTERM
stops them all cleanly; a worker that dies takes the others down with a failing status; a port
another program serves is refused, not shared."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_process import free_port, wait_until_serving

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.wire.tensors import to_tensor

WORKERS = 2
CONNECTIONS = 24  # all on one of two workers: probability 2**-23
STOP_WITHIN_S = 30


def _start(repo: Path, port: int, metrics_port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "latentwatch", "serve", "--repo", str(repo), "--port",
               str(port), "--metrics-port", str(metrics_port), "--http-port", "-1",
               "--workers", str(WORKERS)]
    env = {**os.environ, "LATENTWATCH_INTRA_OP_THREADS": "1"}
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _score_calls(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "latentwatch_requests" for sample in family.samples
               if sample.labels.get("method", "").endswith("Score")
               and sample.name.endswith("_total"))


def _wait_metrics(metrics_port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            _score_calls(metrics_port)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"no metrics on {metrics_port}:\n{log.read_text()[-3000:]}")


@pytest.fixture
def workers(synthetic_repo: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes],
                                                                    int, int, Path]]:
    port, metrics_port = free_port(), free_port()
    while metrics_port + 1 == port:
        metrics_port = free_port()
    log = tmp_path / "serve.log"
    process = _start(synthetic_repo, port, metrics_port, log)
    try:
        for i in range(WORKERS):
            _wait_metrics(metrics_port + i, process, log)
        yield process, port, metrics_port, log
    finally:
        if process.poll() is None:
            process.kill()
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
        process.wait(10)


def test_the_workers_share_the_port_and_each_answers(
    workers: tuple[subprocess.Popen[bytes], int, int, Path],
) -> None:
    process, port, metrics_port, log = workers
    rows = np.ones((2, 5), dtype=np.float32)
    request = pb.ScoreRequest(model_name="tab-ae", input=to_tensor(rows))
    for _ in range(CONNECTIONS):  # a channel of its own is a connection of its own
        with grpc.insecure_channel(f"127.0.0.1:{port}",
                                   options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            wait_until_serving(channel, process, log)
            reply = pb_grpc.LatentwatchStub(channel).Score(request, timeout=10)
            assert len(reply.score) == 2
    calls = [_score_calls(metrics_port + i) for i in range(WORKERS)]
    assert sum(calls) == CONNECTIONS, calls
    assert min(calls) > 0, f"one worker answered every connection: {calls}"


def test_sigterm_stops_every_worker_and_exits_cleanly(
    workers: tuple[subprocess.Popen[bytes], int, int, Path],
) -> None:
    process, _, _, log = workers
    children = psutil.Process(process.pid).children()
    assert len(children) == WORKERS
    process.send_signal(signal.SIGTERM)
    assert process.wait(STOP_WITHIN_S) == 0, log.read_text()[-3000:]
    assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE
                   for child in children)


def test_a_worker_that_dies_stops_the_others_with_a_failing_status(
    workers: tuple[subprocess.Popen[bytes], int, int, Path],
) -> None:
    process, _, _, log = workers
    first, second = psutil.Process(process.pid).children()
    first.kill()
    assert process.wait(STOP_WITHIN_S) == 1
    second.wait(STOP_WITHIN_S)
    assert "exited with status" in log.read_text()


def test_a_port_another_program_serves_is_refused(synthetic_repo: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "serve.log"
        process = _start(synthetic_repo, port, free_port(), log)
        assert process.wait(60) == 1
    assert "cannot serve 2 workers" in log.read_text()
