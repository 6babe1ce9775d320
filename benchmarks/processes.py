"""Server subprocesses for the benchmark: start, wait until they answer, stop."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from latentwatch.client.client import LatentwatchClient

logger = logging.getLogger(__name__)

STOP_GRACE_S = 15.0
REPO_ROOT = Path(__file__).resolve().parents[1]
# The pytriton environment (`make triton`); the Triton contract test finds it the same way.
TRITON_VENV = Path(os.environ.get("LATENTWATCH_TRITON_VENV", REPO_ROOT / ".venv-triton"))
TRITON_PEER = REPO_ROOT / "deploy" / "triton" / "serve_onnx.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 process_group: bool = False) -> None:
        """With `process_group`, the child leads its own process group and `stop` signals the
        whole group (a server that starts servers of its own, such as tritonserver)."""
        self.log_path = log_path
        self._log = log_path.open("wb")
        self._group = process_group
        self.started_s = time.perf_counter()
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=process_group,
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
        if self._group:
            self._stop_group()
        elif self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                logger.warning("server %d ignored SIGTERM; killing it", self.pid)
                self.process.kill()
                self.process.wait()
        self._log.close()

    def _stop_group(self) -> None:
        """SIGTERM to the group, then SIGKILL after the grace time, until every member is gone."""
        group = self.process.pid
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline_s = time.perf_counter() + STOP_GRACE_S
        while True:
            self.process.poll()  # reaps the leader, so that it does not linger as a zombie
            late = time.perf_counter() > deadline_s
            try:
                os.killpg(group, signal.SIGKILL if late else 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

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


def triton_missing() -> str | None:
    """Why the pytriton environment cannot run a Triton peer, or None when it can."""
    failed = TRITON_VENV / ".failed"
    if failed.exists():
        return f"no Triton environment: {failed.read_text().strip()}"
    if not (TRITON_VENV / ".installed").exists():
        return f"no Triton environment at {TRITON_VENV} (`make triton` builds it)"
    return None


def start_triton(
    triton_repo: Path, log_path: Path, threads: int, models: list[tuple[str, str]],
    ready_timeout_s: float = 180.0, grpc_port: int = 0,
) -> tuple[ServerProcess, str, float]:
    """pytriton's tritonserver (deploy/triton/serve_onnx.py) on a `latentwatch triton-repo`
    output, ONNX Runtime with `threads` intra-op threads per instance, on `grpc_port` (0: a free
    one); waits until each (model, version) is ready; returns it, its gRPC target and seconds
    to ready."""
    import tritonclient.grpc as triton_grpc

    if (missing := triton_missing()) is not None:
        raise RuntimeError(missing)
    port = grpc_port or free_port()
    argv = [
        str(TRITON_VENV / "bin" / "python"), str(TRITON_PEER), "--triton-repo", str(triton_repo),
        "--grpc-port", str(port), "--http-port", str(free_port()),
        "--metrics-port", str(free_port()), "--threads", str(threads),
    ]
    server = ServerProcess(argv, log_path, process_group=True)
    target = f"127.0.0.1:{port}"
    client = triton_grpc.InferenceServerClient(target)
    try:
        deadline_s = time.perf_counter() + ready_timeout_s
        while True:
            server.check_alive()
            try:
                if all(client.is_model_ready(m, v) for m, v in models):
                    break
            except Exception:  # not listening yet
                pass
            if time.perf_counter() >= deadline_s:
                raise RuntimeError(
                    f"Triton was not ready in {ready_timeout_s} s; log tail:\n{server.log_tail()}"
                )
            time.sleep(0.25)
        ready_s = time.perf_counter() - server.started_s
    except BaseException:
        server.stop()
        raise
    finally:
        client.close()
    return server, target, ready_s


def triton_versions() -> dict[str, str]:
    """Package versions in the Triton environment."""
    code = ("import json; from importlib import metadata as m; print(json.dumps({p: m.version(p) "
            "for p in ('nvidia-pytriton', 'onnxruntime', 'numpy')}))")
    done = subprocess.run([str(TRITON_VENV / "bin" / "python"), "-c", code],
                          capture_output=True, text=True, check=True)
    return {**json.loads(done.stdout), "backend": "tritonserver's Python backend, pytriton"}


class CpuWatch:
    """CPU seconds the whole machine, this process and each server's process tree spent during
    a measurement, as cores: what the benchmark used, and what other work on a shared machine
    took meanwhile."""

    def __init__(self, servers: dict[str, int]) -> None:
        self._pids = {"client": os.getpid(), **servers}  # name: pid
        self.figures: dict[str, Any] = {}

    def _tree_s(self, name: str) -> float:
        """User + system seconds of the process; a server's with its descendants (this process
        alone: the servers are its children, counted under their own names)."""
        try:
            root = psutil.Process(self._pids[name])
            tree = [root] if name == "client" else [root, *root.children(recursive=True)]
            return sum(sum(p.cpu_times()[:2]) for p in tree)
        except psutil.Error:
            return 0.0

    @staticmethod
    def _busy_s() -> float:
        t = psutil.cpu_times()._asdict()  # Linux counts guest time inside user time
        idle = ("idle", "iowait", "guest", "guest_nice")
        return sum(v for k, v in t.items() if k not in idle)

    def _sample(self) -> tuple[float, float, dict[str, float]]:
        return (time.perf_counter(), self._busy_s(),
                {name: self._tree_s(name) for name in self._pids})

    def __enter__(self) -> CpuWatch:
        self._start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._sample()
        wall_s = end[0] - self._start[0]
        cores = {name: (end[2][name] - self._start[2][name]) / wall_s for name in self._pids}
        busy = (end[1] - self._start[1]) / wall_s
        ours = sum(cores.values())
        self.figures = {"busy_cores": busy, "benchmark_cores": ours,
                        "other_cores": max(busy - ours, 0.0), "cores": cores,
                        "loadavg_1m": os.getloadavg()[0]}
