"""Health follows Triton while serving (service/triton_health.py), against a real tritonserver.

The peer is the pytriton tritonserver of test_triton_runtime.py. A latentwatch with
`backend="triton"` reports SERVING while Triton and the served graphs are ready; when Triton
stops, gRPC health, KServe ServerReady/ModelReady, REST /v2/health/ready and the ready gauge turn
not ready within a few `triton_health_interval_s`, and back once Triton returns, with no restart.
A version refused at start because its graphs were not ready in Triton in time is served once
they are, although its files never changed and repository polling is off.
"""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from repo_builder import build_version
from server_harness import ServerThread, server_settings
from test_triton_runtime import SCORE_ATOL, SCORE_RTOL, Peer

from latentwatch.client import LatentwatchClient
from latentwatch.errors import ModelNotFound, NotReady
from latentwatch.export.triton import write_triton_repository

INTERVAL_S = 0.5
FLIP_S = 10 * INTERVAL_S  # "within a few intervals", probe timeouts (1 s) included
RETURN_S = 30.0  # Triton's own start is the slow part; the channel reconnects within 1 s
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _wait_until(what: str, done: Callable[[], bool], within_s: float) -> float:
    """Seconds until `done()` held; AssertionError naming `what` past `within_s`."""
    start = time.monotonic()
    while not done():
        assert time.monotonic() - start < within_s, f"{what} not within {within_s:g} s"
        time.sleep(0.05)
    return time.monotonic() - start


def _health(server: ServerThread) -> int:
    stub = health_pb2_grpc.HealthStub(server.channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _ready_gauge(server: ServerThread) -> float:
    url = f"http://127.0.0.1:{server.running.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return float(next(line.split()[1] for line in text.splitlines()
                      if line.startswith("latentwatch_ready ")))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "source"
    build_version(repo, "tab-ae", kind="ae", n_features=5, latent_dim=2, seed=1)
    build_version(repo, "late-ae", kind="ae", n_features=5, latent_dim=2, seed=4)
    return repo


def _peer(repo: Path, root: Path, leave_out: str = "") -> tuple[Peer, Path]:
    """A peer serving the Triton repository of `repo`, less the graphs of model `leave_out`;
    and the Triton repository with every model."""
    every = root / "every"
    models = write_triton_repository(repo, every)
    served = root / "served"
    shutil.copytree(every, served, symlinks=True)
    for model in models:
        if leave_out and model.name.startswith(f"{leave_out}."):
            shutil.rmtree(served / model.name)
    wanted = [(m.name, m.versions[-1]) for m in models if (served / m.name).is_dir()]
    return Peer(served, root / "peer.log", wanted), every


@pytest.fixture
def started() -> Iterator[list[Peer | ServerThread]]:
    """What a test starts, stopped at its end (servers first)."""
    things: list[Peer | ServerThread] = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, ServerThread):
            thing.close()
        else:
            thing.stop()


def test_health_follows_a_triton_outage_and_returns_with_it(
    repo: Path, tmp_path: Path, started: list[Peer | ServerThread]
) -> None:
    peer, _ = _peer(repo, tmp_path)
    started.append(peer)
    peer.start()
    server = ServerThread(server_settings(
        repo, backend="triton", triton_url=peer.url, triton_ready_timeout_s=5.0,
        triton_timeout_s=5.0, triton_health_interval_s=INTERVAL_S, reload_interval_s=0,
    ))
    started.append(server)
    port = server.running.port
    ready_url = f"http://127.0.0.1:{server.running.http_port}/v2/health/ready"
    kserve = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
    client = LatentwatchClient(f"127.0.0.1:{port}")
    try:
        rows = np.random.default_rng(3).normal(size=(6, 5)).astype(np.float32)
        before = client.score("tab-ae", rows).score
        assert _health(server) == SERVING and kserve.is_server_ready()
        assert kserve.is_model_ready("tab-ae") and _http_status(ready_url) == 200
        assert _ready_gauge(server) == 1.0

        peer.stop()
        flip_s = _wait_until("health NOT_SERVING", lambda: _health(server) == NOT_SERVING, FLIP_S)
        print(f"NOT_SERVING {flip_s:.2f} s after Triton stopped")  # shown with -s
        assert not kserve.is_server_ready() and not kserve.is_model_ready("tab-ae")
        assert _http_status(ready_url) == 503
        assert _ready_gauge(server) == 0.0
        with pytest.raises(NotReady) as err:
            client.score("tab-ae", rows)
        assert f"Triton at {peer.url} is unavailable (UNAVAILABLE" in str(err.value)

        peer.start()  # the same port, no restart of latentwatch
        back_s = _wait_until("health SERVING again", lambda: _health(server) == SERVING, RETURN_S)
        print(f"SERVING {back_s:.2f} s after Triton's start returned")
        assert kserve.is_server_ready() and kserve.is_model_ready("tab-ae")
        assert _http_status(ready_url) == 200 and _ready_gauge(server) == 1.0
        after = client.score("tab-ae", rows).score
        np.testing.assert_allclose(after, before, rtol=SCORE_RTOL, atol=SCORE_ATOL)
    finally:
        client.close()
        kserve.close()


def test_a_version_refused_because_triton_was_not_ready_serves_once_it_is(
    repo: Path, tmp_path: Path, started: list[Peer | ServerThread]
) -> None:
    peer, every = _peer(repo, tmp_path, leave_out="late-ae")  # late-ae's graphs not there yet
    started.append(peer)
    peer.start()
    server = ServerThread(server_settings(
        repo, backend="triton", triton_url=peer.url, triton_ready_timeout_s=0.5,
        triton_timeout_s=5.0, triton_health_interval_s=INTERVAL_S,
        reload_interval_s=0,  # no polling of the files: only Triton's readiness brings it back
    ))
    started.append(server)
    client = LatentwatchClient(f"127.0.0.1:{server.running.port}")
    try:
        refused = {(r.name, r.version): r.reason for r in server.running.core.repository.refused}
        assert list(refused) == [("late-ae", "1")]
        assert f"Triton at {peer.url}" in refused[("late-ae", "1")]
        assert "not ready after 0.5 s" in refused[("late-ae", "1")]
        rows = np.random.default_rng(4).normal(size=(4, 5)).astype(np.float32)
        with pytest.raises(ModelNotFound):
            client.score("late-ae", rows)
        assert _health(server) == SERVING  # what is served is ready

        # Triton restarts with the missing graphs in its repository.
        peer.stop()
        peer.triton_repo = every
        peer.models = [(m, "1") for m in sorted(p.name for p in every.iterdir() if p.is_dir())]
        peer.start()

        def late_scores() -> bool:
            try:
                client.score("late-ae", rows)
            except (ModelNotFound, NotReady):
                return False
            return True

        late_s = _wait_until("late-ae served", late_scores, RETURN_S)
        print(f"late-ae served {late_s:.2f} s after Triton's start returned")
        assert server.running.core.repository.refused == []
        assert client.get_model("late-ae").execution_provider == "Triton KIND_CPU"
        assert _health(server) == SERVING
    finally:
        client.close()
