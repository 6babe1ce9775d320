"""Several server processes on one port (`latentwatch serve --workers N`, settings.workers).

One process serves gRPC on one event loop, and on a machine with many cores its Python request
path (parsing, batching, answering) is what limits small requests. With N workers, N full
servers share the gRPC and REST ports through SO_REUSEPORT: the kernel spreads connections over
them (calls on one connection stay in one worker), each loads every model version itself and
batches on its own. Worker i serves its metrics on metrics_port + i, so Prometheus scrapes each
(in Kubernetes, scale pods rather than workers: one worker per pod is the default).

This process only supervises: it checks the ports are free (a port already served by another
program is an error, not a shared one), starts the workers as `latentwatch serve` processes
with their settings in LATENTWATCH_* variables, passes SIGTERM/SIGINT/SIGHUP on, and when one
worker dies the others are stopped and the exit status says so, for the supervisor above
(systemd, Kubernetes) to restart the whole.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from latentwatch.service.settings import Settings

log = logging.getLogger(__name__)

POLL_S = 0.2


def worker_environment(settings: Settings, index: int, metrics_port: int) -> dict[str, str]:
    """LATENTWATCH_* variables that make `latentwatch serve` worker `index` of `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTWATCH_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple | list | dict):
            text = json.dumps(list(value) if not isinstance(value, dict) else value)
        else:
            text = str(value)
        env[f"LATENTWATCH_{name.upper()}"] = text
    env.update(LATENTWATCH_WORKERS="1", LATENTWATCH_REUSE_PORT="true",
               LATENTWATCH_METRICS_PORT=str(metrics_port + index if metrics_port else 0))
    return env


def _free_port(host: str, port: int) -> int:
    """`port` (or, for 0, one the kernel picks) once nothing listens on it; OSError if taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, port))  # no SO_REUSEPORT: a listener elsewhere makes this fail
        return int(probe.getsockname()[1])


def serve_workers(settings: Settings) -> int:
    """Runs settings.workers servers on the same ports until a signal or a worker's death;
    returns the exit status (0 after a clean stop)."""
    n = settings.workers
    host = settings.host
    try:
        port = _free_port(host, settings.port)
        http_port = settings.http_port if settings.http_port < 0 else _free_port(
            host, settings.http_port)
    except OSError as err:
        log.error("cannot serve %d workers on %s: %s", n, host, err)
        return 1
    shared = settings.model_copy(update={"port": port, "http_port": http_port})
    argv = [sys.executable, "-m", "latentwatch", "--log-level", settings.log_level, "serve"]
    workers = [
        subprocess.Popen(argv, env=worker_environment(shared, i, settings.metrics_port))
        for i in range(n)
    ]
    log.info("%d workers (pids %s) serve gRPC on %s:%d%s", n,
             ", ".join(str(w.pid) for w in workers), host, port,
             f", REST on {http_port}" if http_port >= 0 else "")
    stopping: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGHUP:
            stopping.append(signum)
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    status = 0
    while any(w.poll() is None for w in workers):
        died = [w for w in workers if w.poll() not in (None, 0)]
        if died and not stopping:
            log.error("worker %d exited with status %s: stopping the others", died[0].pid,
                      died[0].returncode)
            status = 1
            forward(signal.SIGTERM, None)
        time.sleep(POLL_S)
    if not stopping and status == 0:  # every worker ended by itself
        status = 1 if any(w.returncode for w in workers) else 0
    return status
