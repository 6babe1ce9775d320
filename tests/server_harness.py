"""A real server on an ephemeral port, run on an event loop in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from latentwatch.repository.layout import version_dirs
from latentwatch.repository.manifest import Manifest
from latentwatch.service.server import RunningServer, start_server
from latentwatch.service.settings import Settings

T = TypeVar("T")
MAX_REQUEST_ROWS = 20_000  # 64 FP32 features: 5 MiB, past gRPC's default 4 MiB


@dataclass(frozen=True)
class RepoUnderTest:
    path: Path
    synthetic: bool  # graphs from repo_builder, whose outputs tests can recompute

    def manifest(self, name: str, version: str = "") -> Manifest:
        model_dir = self.path / name
        version = version or version_dirs(model_dir)[-1].name
        return Manifest.read(model_dir / version)

    def model_of_kind(self, *kinds: str) -> str | None:
        for model_dir in sorted(p for p in self.path.iterdir() if p.is_dir()):
            if self.manifest(model_dir.name).model_kind in kinds:
                return model_dir.name
        return None


class ServerThread:
    """start_server on an event loop in a background thread, for tests with sync stubs."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        try:
            self.running: RunningServer = self.call(start_server(settings), timeout_s=120)
        except BaseException:
            self._stop_loop()
            raise
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{self.running.port}",
            options=[("grpc.max_receive_message_length", settings.max_message_bytes),
                     ("grpc.max_send_message_length", settings.max_message_bytes)],
        )

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def close(self) -> None:
        self.channel.close()
        self.call(self.running.stop(1.0))
        self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def server_settings(repo: Path, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        repo=repo, port=0, metrics_port=0, http_port=0, max_batch_delay_ms=1.0, intra_op_threads=1,
        max_request_rows=MAX_REQUEST_ROWS, shutdown_grace_s=2.0,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
