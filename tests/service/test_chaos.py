"""`latentwatch serve` under chaos: SIGKILL under load, files corrupted, added and removed while
serving (hot reload), and slow clients holding every port. Real processes, real channels.

Each test runs client threads that call Score in a loop, each call with a deadline, and asserts
on what every call got: how many failed, with which code, and how long calls took.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from repo_builder import build_repo, build_version

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.layout import CALIBRATION_FILE, SCORER_FILE
from latentwatch.wire.tensors import to_tensor

START_TIMEOUT_S = 90  # a server process on a busy 2-core machine
CALL_TIMEOUT_S = 5.0  # every client call's deadline
WAIT_S = 20.0  # the longest any condition below is waited for
# Clients reconnect quickly after a kill (gRPC's default backoff grows to minutes).
CLIENT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500),
]
SERVING_LINE = re.compile(r"serving \d+ model versions on [^ ]+:(\d+) .*metrics on :(\d+)")
REFUSED_COPY_KEPT = "changed on disk and the new files are refused"
N_SLOW = 16  # slow connections of each kind on each port (the metrics port holds 64 at most)
HALF_PREFACE = b"PRI * HTTP/2.0\r\n"  # 16 of the 24 bytes of the HTTP/2 client preface
HALF_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"  # the blank line never comes
STREAM_REQUESTS = 200  # of 4000 rows each: far more responses than flow control lets through


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    metrics_port: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serving(repo: Path, log: Path, port: int = 0, **env: str) -> Iterator[Server]:
    """`latentwatch serve` in a process until the block ends (SIGKILLed then if still alive)."""
    command = [sys.executable, "-m", "latentwatch", "serve", "--repo", str(repo),
               "--port", str(port), "--metrics-port", "0"]
    environment = {**os.environ, "LATENTWATCH_INTRA_OP_THREADS": "1",
                   "LATENTWATCH_MAX_BATCH_DELAY_MS": "1", **env}
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment)
    server = Server(process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (found := SERVING_LINE.search(server.log_text())):
            assert process.poll() is None, f"server exited:\n{server.log_text()[-3000:]}"
            assert time.monotonic() < deadline, f"never serving:\n{server.log_text()[-3000:]}"
            time.sleep(0.05)
        server.port, server.metrics_port = int(found[1]), int(found[2])
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@dataclass(frozen=True)
class Outcome:
    ended_s: float  # time.monotonic()
    duration_s: float
    code: grpc.StatusCode
    version: str = ""
    p_value: tuple[float, ...] = ()


class Load:
    """One client thread (and channel) per request, calling Score in a loop until `stop`."""

    def __init__(self, target: str, requests: dict[str, pb.ScoreRequest]) -> None:
        self.outcomes: dict[str, list[Outcome]] = {name: [] for name in requests}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(target, name, request), daemon=True)
            for name, request in requests.items()
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, target: str, name: str, request: pb.ScoreRequest) -> None:
        with grpc.insecure_channel(target, options=CLIENT_OPTIONS) as channel:
            stub = pb_grpc.LatentwatchStub(channel)
            while not self._stop.is_set():
                started_s = time.monotonic()
                try:
                    reply = stub.Score(request, timeout=CALL_TIMEOUT_S)
                except grpc.RpcError as err:
                    ended_s = time.monotonic()
                    self.outcomes[name].append(Outcome(ended_s, ended_s - started_s, err.code()))
                    time.sleep(0.02)  # no spinning on a server that is gone
                    continue
                ended_s = time.monotonic()
                self.outcomes[name].append(Outcome(
                    ended_s, ended_s - started_s, grpc.StatusCode.OK, reply.model_version,
                    tuple(reply.p_value),
                ))

    def since(self, name: str, t_s: float) -> list[Outcome]:
        return [o for o in list(self.outcomes[name]) if o.ended_s > t_s]

    def wait_for(self, name: str, t_s: float, ok: Callable[[Outcome], bool], what: str) -> None:
        try:
            wait_until(lambda: any(ok(o) for o in self.since(name, t_s)), f"{name}: {what}")
        except AssertionError as err:
            last = [(o.code.name, o.version) for o in self.outcomes[name][-3:]]
            raise AssertionError(f"{err}; the last calls got {last}") from None

    def failures(self) -> dict[str, list[grpc.StatusCode]]:
        return {n: [o.code for o in out if o.code != grpc.StatusCode.OK]
                for n, out in self.outcomes.items()}

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:  # a call in flight ends by its deadline at the latest
            thread.join(CALL_TIMEOUT_S + 5)
        assert not any(t.is_alive() for t in self._threads), "a client thread hangs"


def score_request(name: str, n_features: int, version: str = "", seed: int = 0) -> pb.ScoreRequest:
    x = np.random.default_rng(seed).normal(size=(4, n_features)).astype(np.float32)
    return pb.ScoreRequest(model_name=name, model_version=version, input=to_tensor(x))


IMG, TAB = ("img-vae", 64), ("tab-ae", 5)  # the synthetic repository's models


def test_sigkill_under_load_fails_calls_fast_and_a_new_server_serves(
    synthetic_repo: Path, tmp_path: Path
) -> None:
    requests = {f"{name}-{i}": score_request(name, width, seed=i)
                for name, width in (IMG, TAB) for i in range(2)}
    with ExitStack() as stack:
        first = stack.enter_context(serving(synthetic_repo, tmp_path / "first.log"))
        load = Load(first.target, requests)
        stack.callback(load.stop)
        for name in requests:
            load.wait_for(name, 0.0, lambda o: o.code == grpc.StatusCode.OK, "a reply")
        before = {name: load.outcomes[name][-1] for name in requests}
        killed_s = time.monotonic()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        for name in requests:
            load.wait_for(name, killed_s, lambda o: o.code != grpc.StatusCode.OK, "a failure")

        second = stack.enter_context(serving(synthetic_repo, tmp_path / "second.log",
                                             port=first.port))
        restarted_s = time.monotonic()
        for name in requests:  # the same channels, reconnected
            load.wait_for(name, restarted_s, lambda o: o.code == grpc.StatusCode.OK, "a reply")
        load.stop()
        with grpc.insecure_channel(second.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    for name, outcomes in load.outcomes.items():
        failed = [o for o in outcomes if o.code != grpc.StatusCode.OK]
        assert failed and all(o.ended_s > killed_s for o in failed), name
        assert {o.code for o in failed} == {grpc.StatusCode.UNAVAILABLE}, (name, failed[:3])
        assert max(o.duration_s for o in failed) < CALL_TIMEOUT_S  # none ran to its deadline
        assert failed[0].ended_s - killed_s < 2.0, f"{name}: the first failure took that long"
        again = [o for o in outcomes if o.ended_s > restarted_s and o.p_value]
        assert again[-1].p_value == before[name].p_value  # the same answers as before the kill
    assert " ERROR " not in second.log_text(), second.log_text()[-3000:]
    first_failures_s = [
        next(o.ended_s for o in outcomes if o.code != grpc.StatusCode.OK) - killed_s
        for outcomes in load.outcomes.values()
    ]
    print(f"first failure {max(first_failures_s):.3f} s after the kill; "
          f"{sum(map(len, load.failures().values()))} calls failed while no server ran")


@pytest.mark.parametrize("reload", ["polling", "sighup"])
def test_corrupt_add_and_remove_versions_under_load_fails_no_call(
    tmp_path: Path, reload: str
) -> None:
    repo = build_repo(tmp_path / "repo")
    interval_s = "0.2" if reload == "polling" else "0"  # 0: reload passes on SIGHUP only
    requests = {
        "pinned": score_request(IMG[0], IMG[1], version="1"),
        "latest": score_request(*IMG),
        "latest-2": score_request(*IMG, seed=2),
        "other": score_request(*TAB),
    }
    with ExitStack() as stack:
        server = stack.enter_context(
            serving(repo, tmp_path / "server.log", LATENTWATCH_RELOAD_INTERVAL_S=interval_s))
        load = Load(server.target, requests)
        stack.callback(load.stop)
        for name in requests:
            load.wait_for(name, 0.0, lambda o: o.code == grpc.StatusCode.OK, "a reply")
        baseline = {name: load.outcomes[name][-1].p_value for name in requests}

        def changed() -> None:
            if reload == "sighup":
                server.process.send_signal(signal.SIGHUP)

        def corrupt(path: Path, name: str) -> None:
            t_s = time.monotonic()
            path.write_bytes(os.urandom(path.stat().st_size + 17))
            changed()
            wait_until(lambda: any(REFUSED_COPY_KEPT in line and name in line
                                   for line in server.log_text().splitlines()),
                       f"the refusal of the corrupted {path.name} of {name}")
            for other in requests:  # calls after the refusal still get the loaded copy
                load.wait_for(other, time.monotonic(), lambda o: o.code == grpc.StatusCode.OK,
                              "a reply after the refusal")
            print(f"{path.name} of {name} refused {time.monotonic() - t_s:.2f} s after")

        corrupt(repo / IMG[0] / "1" / CALIBRATION_FILE, IMG[0])
        corrupt(repo / TAB[0] / "1" / SCORER_FILE, TAB[0])

        t_s = time.monotonic()  # written in place, file by file, manifest last
        build_version(repo, IMG[0], "2", n_features=64, image_shape=[1, 8, 8], seed=5)
        changed()
        for name in ("latest", "latest-2"):
            load.wait_for(name, t_s, lambda o: o.version == "2", "version 2 as the latest")
        print(f"version 2 served {time.monotonic() - t_s:.2f} s after it was written")

        t_s = time.monotonic()
        shutil.rmtree(repo / IMG[0] / "2")
        changed()
        for name in ("latest", "latest-2"):
            load.wait_for(name, t_s, lambda o: o.version == "1", "version 1 as the latest again")
        settled_s = time.monotonic()
        for name in requests:
            load.wait_for(name, settled_s, lambda o: o.code == grpc.StatusCode.OK, "a reply")
        print(f"version 2 unloaded {settled_s - t_s:.2f} s after it was removed")
        load.stop()

    assert load.failures() == {name: [] for name in requests}
    assert {o.version for o in load.outcomes["pinned"]} == {"1"}
    for name in requests:  # version 1 still answers from the files it was loaded from
        version_1 = [o.p_value for o in load.outcomes[name] if o.version == "1"]
        assert set(version_1) == {baseline[name]}, name
    log = server.log_text()
    assert log.count(REFUSED_COPY_KEPT) >= 2, log[-3000:]
    print(f"calls: {sum(map(len, load.outcomes.values()))}, none failed")


def stream_messages(metrics_port: int) -> float:
    """ScoreStream messages the server has scored (each is counted as one request)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "latentwatch_requests"
        for sample in family.samples
        if sample.name == "latentwatch_requests_total" and "ScoreStream" in sample.labels["method"]
    )


def p99(samples_s: list[float]) -> float:
    return float(np.quantile(samples_s, 0.99))


def test_slow_clients_on_every_port_do_not_slow_other_callers(
    synthetic_repo: Path, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        server = stack.enter_context(serving(synthetic_repo, tmp_path / "server.log"))
        channel = stack.enter_context(grpc.insecure_channel(server.target))
        stub = pb_grpc.LatentwatchStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        request = score_request(*IMG)

        def timed_calls(n: int) -> dict[str, list[float]]:
            times: dict[str, list[float]] = {"score": [], "health": [], "metrics": []}
            url = f"http://127.0.0.1:{server.metrics_port}/metrics"
            for i in range(n):
                calls = {"score": lambda: stub.Score(request, timeout=CALL_TIMEOUT_S),
                         "health": lambda: health.Check(health_pb2.HealthCheckRequest(),
                                                        timeout=CALL_TIMEOUT_S)}
                if i % 10 == 0:
                    calls["metrics"] = lambda: urllib.request.urlopen(url, timeout=5).read()
                for what, call in calls.items():
                    started_s = time.perf_counter()
                    call()
                    times[what].append(time.perf_counter() - started_s)
            return times

        baseline = timed_calls(50)
        grpc_port, metrics_port = server.port, server.metrics_port
        for port, data in [(grpc_port, HALF_PREFACE), (grpc_port, b""),
                           (metrics_port, HALF_REQUEST), (metrics_port, b"")] * N_SLOW:
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
            sock.sendall(data)
        never_read = stack.enter_context(grpc.insecure_channel(server.target))
        # A stream whose responses are never read: the server's writes stall on flow control.
        big = score_request(TAB[0], TAB[1])
        big.input.CopyFrom(to_tensor(np.zeros((4000, TAB[1]), np.float32)))
        requests = iter([big] * STREAM_REQUESTS)
        stream = pb_grpc.LatentwatchStub(never_read).ScoreStream(requests)
        stack.callback(stream.cancel)
        wait_until(lambda: stream_messages(server.metrics_port) > 0, "the stream scored")
        slowed = timed_calls(100)
        scored = stream_messages(server.metrics_port)
        assert not stream.done() and scored < STREAM_REQUESTS, f"no stall: {scored} scored"
        print(f"the never-read stream: {scored:.0f} of {STREAM_REQUESTS} requests scored")

    print("p99 s (baseline -> with slow clients): " + ", ".join(
        f"{what} {p99(baseline[what]):.4f} -> {p99(slowed[what]):.4f}" for what in baseline))
    assert p99(slowed["score"]) < 0.5 and p99(slowed["health"]) < 0.5
    assert max(slowed["metrics"]) < 2.0
