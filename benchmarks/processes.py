"""Server subprocesses for the benchmark: start, wait until they answer, stop."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from latentwatch.client.client import LatentwatchClient

logger = logging.getLogger(__name__)

STOP_GRACE_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.started_s = time.perf_counter()
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, n_chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n_chars:]

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"server exited with {self.process.returncode}; log tail:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                logger.warning("server %d ignored SIGTERM; killing it", self.pid)
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_latentwatch(
    repo: Path, log_path: Path, threads: int, ready_timeout_s: float = 120.0,
    http_port: int = -1, extra_env: dict[str, str] | None = None,
) -> tuple[ServerProcess, str, float]:
    """`latentwatch serve` on free ports (the REST port only when `http_port` is given, -1:
    off); returns it, its gRPC target and seconds to SERVING."""
    port, metrics_port = free_port(), free_port()
    argv = [
        sys.executable, "-m", "latentwatch", "--log-level", "WARNING", "serve",
        "--repo", str(repo), "--port", str(port), "--metrics-port", str(metrics_port),
        "--http-port", str(http_port),
    ]
    env = {"LATENTWATCH_INTRA_OP_THREADS": str(threads), **(extra_env or {})}
    server = ServerProcess(argv, log_path, env=env)
    target = f"127.0.0.1:{port}"
    try:
        with LatentwatchClient(target) as client:
            deadline_s = time.perf_counter() + ready_timeout_s
            while True:
                server.check_alive()
                try:
                    client.wait_ready(min(1.0, max(deadline_s - time.perf_counter(), 0.01)))
                    break
                except Exception:
                    if time.perf_counter() >= deadline_s:
                        raise
        ready_s = time.perf_counter() - server.started_s
    except BaseException:
        server.stop()
        raise
    return server, target, ready_s


def start_noop(response_path: Path, log_path: Path) -> tuple[ServerProcess, str]:
    port = free_port()
    script = Path(__file__).resolve().parent / "noop_server.py"
    argv = [sys.executable, str(script), "--port", str(port), "--response", str(response_path)]
    return ServerProcess(argv, log_path), f"127.0.0.1:{port}"
