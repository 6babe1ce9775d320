"""`latentwatch serve` as a real process: no torch/onnx imports, clean SIGTERM, bad repos."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.wire.tensors import to_tensor

N_IN_FLIGHT = 40
FORBIDDEN = ("torch", "onnx")  # never on the serving path (onnxruntime is fine)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(
    repo: Path, port: int, metrics_port: int, log_dir: Path, **env: str
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-X", "importtime", "-m", "latentwatch", "serve", "--repo", str(repo),
        "--port", str(port), "--metrics-port", str(metrics_port),
    ]
    environment = {**os.environ, "LATENTWATCH_INTRA_OP_THREADS": "1", **env}
    return subprocess.Popen(
        command,
        stdout=(log_dir / "stdout.txt").open("w"),
        stderr=(log_dir / "stderr.txt").open("w"),  # importtime output is long: not a pipe
        env=environment,
    )


def wait_until_serving(
    channel: grpc.Channel, process: subprocess.Popen[bytes], log: Path
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited early:\n{log.read_text()[-3000:]}"
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server never became SERVING:\n{log.read_text()[-3000:]}")


def inflight(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    for family in text_string_to_metric_families(text.decode()):
        if family.name == "latentwatch_inflight_requests":
            return family.samples[0].value
    raise AssertionError("latentwatch_inflight_requests is missing")


def imported_modules(stderr: str) -> set[str]:
    # -X importtime lines: "import time: self [us] | cumulative | imported package"
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_sigterm_lets_in_flight_requests_finish_and_nothing_imports_torch_or_onnx(
    synthetic_repo: Path, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    # A long batch delay holds the requests in the server when SIGTERM arrives.
    process = serve(
        synthetic_repo, port, metrics_port, tmp_path,
        LATENTWATCH_MAX_BATCH_DELAY_MS="1500", LATENTWATCH_MAX_BATCH_ROWS="1024",
    )
    stderr_log = tmp_path / "stderr.txt"
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            wait_until_serving(channel, process, stderr_log)
            stub = pb_grpc.LatentwatchStub(channel)
            x = np.random.default_rng(0).normal(size=(N_IN_FLIGHT, 64)).astype(np.float32)
            calls = [
                stub.Score.future(
                    pb.ScoreRequest(model_name="img-vae", input=to_tensor(x[i : i + 1])),
                    timeout=30,
                )
                for i in range(N_IN_FLIGHT)
            ]
            deadline = time.monotonic() + 10
            while inflight(metrics_port) < N_IN_FLIGHT:
                assert time.monotonic() < deadline, "the requests never reached the server"
                time.sleep(0.02)
            assert not any(c.done() for c in calls)
            process.send_signal(signal.SIGTERM)
            replies = [c.result(timeout=30) for c in calls]
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert [len(r.score) for r in replies] == [1] * N_IN_FLIGHT
    assert all(r.model_name == "img-vae" for r in replies)
    stderr = stderr_log.read_text()
    assert "serving 2 model versions on 127.0.0.1" in stderr
    assert "stopping" in stderr
    modules = imported_modules(stderr)
    assert {"onnxruntime", "grpc", "latentwatch.service.server"} <= modules  # the parse works
    forbidden = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)
    assert not forbidden, f"the serving path imported {forbidden}"


@pytest.mark.parametrize("what", ["empty", "missing"])
def test_serve_exits_non_zero_when_there_is_nothing_to_serve(tmp_path: Path, what: str) -> None:
    repo = tmp_path / "repo"
    if what == "empty":
        repo.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "latentwatch", "serve", "--repo", str(repo), "--port", "0",
         "--metrics-port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    expected = "holds no version directories" if what == "empty" else "does not exist"
    assert "nothing to serve" in result.stderr and expected in result.stderr, result.stderr
