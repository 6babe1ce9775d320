"""Starting and stopping the server: gRPC (latentwatch, health, reflection) and metrics.

Health for "" and latentwatch.v1.Latentwatch stays NOT_SERVING until every version has loaded
and run once (or for good when a required GPU is not in use); SIGTERM/SIGINT turn it
NOT_SERVING at once, stop accepting calls, and give in-flight calls `shutdown_grace_s`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from latentwatch.errors import LatentwatchError, NotReady
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.layout import find_versions
from latentwatch.service.core import ScoringCore
from latentwatch.service.interceptor import ErrorsAndMetrics
from latentwatch.service.loader import load_repository
from latentwatch.service.metrics import ServiceMetrics
from latentwatch.service.repository import ModelRepository
from latentwatch.service.runtime import CUDA
from latentwatch.service.servicer import (
    PER_MESSAGE_METHODS,
    SERVICE_NAME,
    LatentwatchServicer,
)
from latentwatch.service.settings import Settings

log = logging.getLogger(__name__)

HEALTH_SERVICES = ("", SERVICE_NAME)


@dataclass
class RunningServer:
    """A started server; `stop` it on the loop that started it."""

    port: int
    metrics_port: int
    health: health.aio.HealthServicer
    core: ScoringCore
    metrics: ServiceMetrics
    settings: Settings
    _server: grpc.aio.Server
    _executor: ThreadPoolExecutor

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING now; refuse new calls; in-flight calls get `grace_s` to finish."""
        grace_s = self.settings.shutdown_grace_s if grace_s is None else grace_s
        await self.health.enter_graceful_shutdown()
        self.metrics.ready = False
        await self._server.stop(grace_s)
        if self.core.repository is not None:
            await self.core.repository.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.metrics.close)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def start_server(settings: Settings) -> RunningServer:
    """Binds, loads every model version (its blocking work in the executor), warms up, then
    reports SERVING.

    Raises NotReady when there is nothing to serve (no versions, or every one refused).
    """
    metrics = ServiceMetrics()
    try:
        metrics_port = metrics.serve(settings.metrics_port, settings.host)
    except OSError as err:
        raise LatentwatchError(
            f"cannot serve metrics on {settings.host}:{settings.metrics_port}: {err}"
        ) from err
    found = find_versions(settings.repo) if settings.repo.is_dir() else []
    executor = ThreadPoolExecutor(
        max_workers=max(2, 2 * len(found)), thread_name_prefix="latentwatch-run"
    )
    core = ScoringCore(settings)
    server = grpc.aio.server(
        # Errors -> status codes and request metrics, once, for every servicer on the port.
        interceptors=[ErrorsAndMetrics(metrics, per_message=PER_MESSAGE_METHODS)],
        options=[
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a taken port is an error, not a shared one
        ]
    )
    pb_grpc.add_LatentwatchServicer_to_server(LatentwatchServicer(core), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in HEALTH_SERVICES:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    running = RunningServer(
        0, metrics_port, health_servicer, core, metrics, settings, server, executor
    )
    try:
        running.port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    except RuntimeError as err:
        await running.stop(0)
        raise LatentwatchError(
            f"cannot serve gRPC on {settings.host}:{settings.port}: {err}"
        ) from err
    await server.start()
    try:
        # On the loop (health answers NOT_SERVING meanwhile); the blocking work goes to executor.
        repository = await load_repository(settings.repo, found, settings, metrics, executor)
        if not len(repository):
            problem = f"nothing to serve: {_nothing_loaded(settings.repo, repository)}"
            log.error("%s", problem)
            raise NotReady(problem)
    except BaseException:
        await running.stop(0)
        raise
    not_ready = _gpu_problem(repository) if settings.require_gpu else ""
    core.set_repository(repository, not_ready)
    if not_ready:
        log.error("NOT SERVING: %s", not_ready)
        return running
    for service in HEALTH_SERVICES:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    metrics.ready = True
    log.info(
        "serving %d model versions on %s:%d, metrics on :%d",
        len(repository), settings.host, running.port, metrics_port,
    )
    return running


def _nothing_loaded(repo: Path, repository: ModelRepository) -> str:
    if not repo.is_dir():
        return f"model repository {repo} does not exist"
    if not repository.refused:
        models = sorted(p.name for p in repo.iterdir() if p.is_dir())
        return (
            f"{repo} holds no version directories <model>/<integer>/ "
            f"(model directories: {models or 'none'})"
        )
    refusals = "; ".join(f"{r.name} version {r.version}: {r.reason}" for r in repository.refused)
    return f"every version in {repo} was refused: {refusals}"


def _gpu_problem(repository: ModelRepository) -> str:
    on_cpu = [
        f"{mv.name}:{mv.version} on {mv.provider}"
        for versions in repository.versions.values()
        for mv in versions.values()
        if mv.provider != CUDA
    ]
    if not on_cpu:
        return ""
    return f"a GPU is required (require_gpu) but {CUDA} is not in use for {', '.join(on_cpu)}"


async def serve(settings: Settings) -> None:
    """Serves until SIGTERM or SIGINT, then stops cleanly (in-flight calls get
    `settings.shutdown_grace_s`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start_server(settings)
    await stop.wait()
    log.info("stopping: in-flight calls get up to %.1f s", settings.shutdown_grace_s)
    await running.stop(settings.shutdown_grace_s)
    log.info("stopped")
