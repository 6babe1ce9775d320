"""Hot reload on a real server under load: versions appear, change and go while callers that
pin no version keep being answered; ModelControl loads and unloads; health follows."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from repo_builder import build_version
from server_harness import ServerThread, server_settings

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.wire.tensors import to_tensor

POLL_S = 0.1


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    build_version(repo, "m", "1")
    build_version(repo, "other", "1", seed=1)
    return repo


@pytest.fixture
def server(repo: Path) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(repo, reload_interval_s=POLL_S))
    try:
        yield running
    finally:
        running.close()


def _publish(repo: Path, name: str, version: str, **kw: object) -> None:
    """A version written elsewhere and renamed into place, as export does."""
    staging = repo.parent / f"staging-{name}-{version}"
    build_version(staging, name, version, **kw)  # type: ignore[arg-type]
    (staging / name / version).rename(repo / name / version)


class Load:
    """Threads scoring `model` (no version pinned) until stopped; counts codes and versions."""

    def __init__(self, server: ServerThread, model: str, threads: int = 3) -> None:
        self._stub = pb_grpc.LatentwatchStub(server.channel)
        self._model = model
        self._stop = threading.Event()
        self.codes: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, seed: int) -> None:
        rows = np.random.default_rng(seed).normal(size=(8, 64)).astype(np.float32)
        request = pb.ScoreRequest(model_name=self._model, input=to_tensor(rows))
        while not self._stop.is_set():
            try:
                response = self._stub.Score(request, timeout=10)
                code, version = "OK", response.model_version
            except grpc.RpcError as err:
                code, version = err.code().name, ""
                with self._lock:
                    self.errors.append(f"{code}: {err.details()}")
            with self._lock:
                self.codes[code] += 1
                if version:
                    self.versions[version] += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    def wait_for_version(self, version: str, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self.versions[version] >= 5:
                    return
            time.sleep(0.02)
        raise AssertionError(f"version {version} never answered; seen {dict(self.versions)}")


def _latest(server: ServerThread, model: str) -> str:
    response = pb_grpc.LatentwatchStub(server.channel).ListModels(pb.ListModelsRequest())
    return {m.name: m.latest_version for m in response.models}.get(model, "")


def test_versions_added_and_removed_under_load_fail_no_call(
    server: ServerThread, repo: Path
) -> None:
    with Load(server, "m") as load:
        load.wait_for_version("1")
        _publish(repo, "m", "2", seed=5)
        load.wait_for_version("2")
        shutil.rmtree(repo / "m" / "2")  # back to version 1 while calls run on version 2
        deadline = time.monotonic() + 20
        while _latest(server, "m") != "1" and time.monotonic() < deadline:
            time.sleep(0.02)
        before = load.versions["1"]
        while load.versions["1"] < before + 20 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert load.errors == []
    assert load.codes["OK"] > 40
    assert set(load.versions) == {"1", "2"}


def test_a_changed_version_is_replaced_under_load_and_a_corrupt_one_keeps_serving(
    server: ServerThread, repo: Path
) -> None:
    stub = pb_grpc.LatentwatchStub(server.channel)

    def calibration_size() -> int:
        info = stub.GetModel(pb.GetModelRequest(model_name="m", model_version="1"))
        return info.calibration_size

    assert calibration_size() == 99
    with Load(server, "m") as load:
        load.wait_for_version("1")
        staging = repo.parent / "staging-changed"
        build_version(staging, "m", "1", n_calibration=49)
        old = repo / "m" / ".old-1"
        (repo / "m" / "1").rename(old)
        (staging / "m" / "1").rename(repo / "m" / "1")
        deadline = time.monotonic() + 20
        while calibration_size() != 49 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calibration_size() == 49
        (repo / "m" / "1" / "calibration.npy").write_bytes(b"garbage that is not numpy")
        time.sleep(10 * POLL_S)  # several passes see the corrupt file
        assert calibration_size() == 49  # the loaded copy keeps serving
    assert load.errors == []


def test_model_control_unloads_until_loaded_and_health_follows(
    server: ServerThread, repo: Path
) -> None:
    stub = pb_grpc.LatentwatchStub(server.channel)
    health = health_pb2_grpc.HealthStub(server.channel)
    control = pb.ModelControlRequest

    def serving() -> bool:
        status = health.Check(health_pb2.HealthCheckRequest(service="")).status
        return status == health_pb2.HealthCheckResponse.SERVING

    response = stub.ModelControl(control(action=control.UNLOAD, model_name="other"))
    assert [(r.model_name, r.model_version) for r in response.unloaded] == [("other", "1")]
    time.sleep(5 * POLL_S)  # polling does not bring it back
    assert _latest(server, "other") == ""
    with pytest.raises(grpc.RpcError) as err:
        stub.Score(pb.ScoreRequest(model_name="other", input=to_tensor(np.zeros((1, 64), "f4"))))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert serving()

    stub.ModelControl(control(action=control.UNLOAD, model_name="m"))
    assert not serving()  # nothing left to serve
    with pytest.raises(grpc.RpcError) as err:
        stub.Score(pb.ScoreRequest(model_name="m", input=to_tensor(np.zeros((1, 64), "f4"))))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    response = stub.ModelControl(control(action=control.LOAD, model_name="m"))
    assert [(r.model_name, r.model_version) for r in response.loaded] == [("m", "1")]
    assert serving()
    stub.ModelControl(control(action=control.LOAD, model_name="other", model_version="1"))
    assert _latest(server, "other") == "1"

    for bad, code in (
        (control(action=control.LOAD, model_name="absent"), grpc.StatusCode.NOT_FOUND),
        (control(action=control.UNLOAD, model_name=""), grpc.StatusCode.INVALID_ARGUMENT),
        (control(action=control.ACTION_UNSPECIFIED), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelControl(bad)
        assert err.value.code() == code, err.value.details()


def test_reload_reports_refusals_of_new_versions(server: ServerThread, repo: Path) -> None:
    stub = pb_grpc.LatentwatchStub(server.channel)
    staging = repo.parent / "staging-bad"
    build_version(staging, "m", "3")
    (staging / "m" / "3" / "scorer.onnx").write_bytes(b"not onnx")
    (staging / "m" / "3").rename(repo / "m" / "3")
    response = stub.ModelControl(
        pb.ModelControlRequest(action=pb.ModelControlRequest.RELOAD, model_name="m")
    )
    refused = {(r.model_name, r.model_version) for r in response.refused}
    loaded_by_poll = _latest(server, "m") == "3"
    assert not loaded_by_poll
    # The poll may have refused it first; then this pass does not retry the same files.
    assert refused in ({("m", "3")}, set())
    assert _latest(server, "m") == "1"
