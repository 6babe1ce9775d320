"""The runtime lifecycle as the loader and the repository drive it: every runtime built is loaded
(awaited on the event loop, its session created in the executor) and closed exactly once."""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import Executor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from repo_builder import build_version
from server_harness import server_settings

from latentwatch.repository.layout import find_versions
from latentwatch.service import ort_runtime
from latentwatch.service.loader import load_repository
from latentwatch.service.metrics import ServiceMetrics
from latentwatch.service.repository import ModelRepository
from latentwatch.service.server import start_server


class Recording(ort_runtime.OrtRuntime):
    """The ONNX Runtime runtime, recording its lifecycle; `load` fails for paths in `broken`."""

    built: list[Recording] = []
    broken: set[Path] = set()
    gate: threading.Event | None = None  # when set: sessions wait for it (a slow load)

    def __init__(
        self, path: Path, intra_op_threads: int = 0, executor: Executor | None = None,
        **verified: object,
    ) -> None:
        super().__init__(path, intra_op_threads, executor, **verified)  # type: ignore[arg-type]
        self.events: list[str] = []
        self.load_thread = self.session_thread = 0
        Recording.built.append(self)

    async def load(self) -> None:
        self.events.append("load")
        self.load_thread = threading.get_ident()
        if self.path in Recording.broken:
            raise RuntimeError("no such graph today")
        await super().load()

    def load_blocking(self) -> None:
        self.session_thread = threading.get_ident()
        if Recording.gate is not None:
            assert Recording.gate.wait(30), "the test never opened the gate"
        super().load_blocking()

    async def close(self) -> None:
        self.events.append("close")
        await super().close()


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> type[Recording]:
    monkeypatch.setattr(ort_runtime, "OrtRuntime", Recording)  # make_runtime builds these
    monkeypatch.setattr(Recording, "built", [])
    monkeypatch.setattr(Recording, "broken", set())
    monkeypatch.setattr(Recording, "gate", None)
    return Recording


def load(repo: Path) -> tuple[ModelRepository, int]:
    """The repository loaded on a fresh event loop, and that loop's thread."""

    async def main() -> tuple[ModelRepository, int]:
        settings = server_settings(repo)
        repository = await load_repository(repo, find_versions(repo), settings, ServiceMetrics())
        return repository, threading.get_ident()

    return asyncio.run(main())


def test_the_loader_loads_every_runtime_it_builds_and_the_repository_closes_each(
    tmp_path: Path, recording: type[Recording]
) -> None:
    build_version(tmp_path, "m", "1", with_decoder=True, with_reference=True)
    build_version(tmp_path, "other", "1", kind="ae", n_features=5)
    repository, loop_thread = load(tmp_path)
    assert len(repository) == 2 and not repository.refused
    graphs = sorted(str(r.path.relative_to(tmp_path)) for r in recording.built)
    assert graphs == ["m/1/decoder.onnx", "m/1/encoder.onnx", "m/1/scorer.onnx",
                      "other/1/encoder.onnx", "other/1/scorer.onnx"]
    for runtime in recording.built:
        assert runtime.events == ["load"]
        assert runtime.load_thread == loop_thread  # awaited on the loop...
        assert runtime.session_thread not in (0, loop_thread)  # ...the session made off it
    served = {r for v in repository.versions.values() for mv in v.values() for r in mv.runtimes}
    assert served == set(recording.built)
    asyncio.run(repository.close())
    assert [runtime.events for runtime in recording.built] == [["load", "close"]] * 5


def test_a_runtime_whose_load_fails_refuses_only_its_version_and_closes_what_it_loaded(
    tmp_path: Path, recording: type[Recording]
) -> None:
    build_version(tmp_path, "m", "1")
    broken = build_version(tmp_path, "m", "2")
    recording.broken.add(broken / "encoder.onnx")
    repository, _ = load(tmp_path)
    assert [(r.name, r.version) for r in repository.refused] == [("m", "2")]
    assert repository.refused[0].reason == (
        "ONNX Runtime cannot load a graph: no such graph today"
    )
    assert repository.get("m").version == "1"
    events = {str(r.path.relative_to(tmp_path)): r.events for r in recording.built}
    # The refused version's scorer had loaded: it is closed at once, not left open.
    assert events == {"m/1/scorer.onnx": ["load"], "m/1/encoder.onnx": ["load"],
                      "m/2/scorer.onnx": ["load", "close"], "m/2/encoder.onnx": ["load"]}
    asyncio.run(repository.close())
    assert events["m/1/scorer.onnx"] == events["m/1/encoder.onnx"] == ["load", "close"]


def test_health_answers_not_serving_while_the_graphs_load(
    tmp_path: Path, recording: type[Recording]
) -> None:
    build_version(tmp_path, "m", "1")
    recording.gate = threading.Event()
    with socket.socket() as s:  # a free port: the server's is only known once it has loaded
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        starting = asyncio.run_coroutine_threadsafe(
            start_server(server_settings(tmp_path, port=port)), loop
        )
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        # The loop answers while a session is being created (held at the gate) in the executor.
        status = health.Check(request, timeout=30, wait_for_ready=True).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not starting.done()
        recording.gate.set()
        running = starting.result(60)
        assert health.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        asyncio.run_coroutine_threadsafe(running.stop(0), loop).result(30)
    finally:
        recording.gate.set()
        channel.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
