"""Starting and stopping the server: gRPC (latentwatch, health, reflection) and metrics.

With `tls_cert` and `tls_key` both ports speak TLS (service/security.py), with `auth_tokens`
every call but health needs a bearer token (service/auth.py), and reflection is then off unless
`reflection` turns it on. The connection limits (concurrent calls, keepalive, idle and age) are
gRPC server options from the settings.

Unless `http_port` is -1, KServe v2 over HTTP/REST (service/kserve_rest.py) serves on its own
port, on this loop, from the moment the gRPC port is bound, with the same TLS, tokens and
request metrics; it stops with the gRPC server.

Health for "" and latentwatch.v1.Latentwatch stays NOT_SERVING until every version has loaded
and run once (or for good when a required GPU is not in use); afterwards it follows hot reload
(service/reload.py: polling, SIGHUP, ModelControl): NOT_SERVING while no version is loaded.
With the Triton backend it also follows Triton (service/triton_health.py): NOT_SERVING while
Triton or the model of a served graph is not ready, SERVING again once it is.
SIGTERM/SIGINT turn it NOT_SERVING at once, stop accepting calls, and give in-flight calls
`shutdown_grace_s`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from latentwatch.errors import LatentwatchError, NotReady
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.layout import find_versions
from latentwatch.repository.manifest import Manifest
from latentwatch.service.auth import TokenAuth, TokenFile
from latentwatch.service.core import ScoringCore
from latentwatch.service.interceptor import ErrorsAndMetrics
from latentwatch.service.kserve import KServe
from latentwatch.service.kserve_grpc import PER_MESSAGE_METHODS as KSERVE_PER_MESSAGE
from latentwatch.service.kserve_grpc import SERVICE_NAME as KSERVE_SERVICE
from latentwatch.service.kserve_grpc import add_kserve_servicer
from latentwatch.service.kserve_rest import RestServer
from latentwatch.service.loader import load_repository
from latentwatch.service.metrics import ServiceMetrics
from latentwatch.service.reload import RepositoryWatcher
from latentwatch.service.repository import ModelRepository
from latentwatch.service.runtime import CUDA, TRITON_GPU, on_gpu
from latentwatch.service.security import (
    certificate_source,
    grpc_server_credentials,
    http_ssl_context,
)
from latentwatch.service.servicer import (
    PER_MESSAGE_METHODS,
    SERVICE_NAME,
    LatentwatchServicer,
)
from latentwatch.service.settings import Settings
from latentwatch.wire.bias import BIAS_CHUNK_ROWS

if TYPE_CHECKING:
    from latentwatch.service.triton_health import TritonHealth

log = logging.getLogger(__name__)

HEALTH_SERVICES = ("", SERVICE_NAME)
MESSAGE_SLACK = 2**20  # request bytes besides the rows: names, ids, group labels, options


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
    watcher: RepositoryWatcher | None = None  # hot reload, once the first load is done
    http_port: int = -1  # the KServe v2 REST port; -1: off (settings.http_port -1)
    _rest: RestServer | None = None
    triton: TritonHealth | None = None  # backend triton: Triton's readiness, polled

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING now; refuse new calls; in-flight calls get `grace_s` to finish."""
        grace_s = self.settings.shutdown_grace_s if grace_s is None else grace_s
        await self.health.enter_graceful_shutdown()
        if self.triton is not None:  # first: its checks publish readiness
            await self.triton.stop()
        self.metrics.ready = False
        if self.watcher is not None:
            await self.watcher.stop()
        # gRPC and REST drain at the same time, each giving in-flight calls `grace_s`.
        await asyncio.gather(
            self._server.stop(grace_s),
            *([] if self._rest is None else [self._rest.stop(grace_s)]),
        )
        if self.core.repository is not None:
            await self.core.repository.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.metrics.close)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def start_server(settings: Settings) -> RunningServer:
    """Binds, loads every model version (its blocking work in the executor), warms up, then
    reports SERVING.

    Raises NotReady when there is nothing to serve (no versions, or every one refused), and
    LatentwatchError, before anything binds, for certificate or token files it cannot use.
    """
    certificates = certificate_source(settings)
    credentials = None if certificates is None else grpc_server_credentials(certificates)
    http_context = http_ssl_context(settings)
    tokens = None if settings.auth_tokens is None else TokenFile(settings.auth_tokens)
    metrics = ServiceMetrics(max_queue_rows=settings.max_queue_rows)
    try:
        # Over TLS (same certificate, key and client CA) when the gRPC port has it.
        metrics_port = metrics.serve(
            settings.metrics_port, settings.metrics_bind_host, http_context
        )
    except OSError as err:
        raise LatentwatchError(
            f"cannot serve metrics on {settings.metrics_bind_host}:{settings.metrics_port}: {err}"
        ) from err
    found = find_versions(settings.repo) if settings.repo.is_dir() else []
    executor = ThreadPoolExecutor(
        max_workers=max(2, 2 * len(found)), thread_name_prefix="latentwatch-run"
    )
    core = ScoringCore(settings)
    # Errors -> status codes and request metrics, once, for every servicer on the port; the
    # token check runs inside, so its refusals are counted with their codes too.
    interceptors: list[grpc.aio.ServerInterceptor] = [
        ErrorsAndMetrics(
            metrics, per_message=PER_MESSAGE_METHODS | KSERVE_PER_MESSAGE,
            stream_idle_timeout_s=settings.stream_idle_timeout_s,
        )
    ]
    if tokens is not None:
        interceptors.append(TokenAuth(tokens))
    receive_bytes = receive_limit(settings, found)
    server = grpc.aio.server(
        interceptors=interceptors,
        options=server_options(settings, receive_bytes),
        # Calls past this get RESOURCE_EXHAUSTED from gRPC before any interceptor sees them.
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    pb_grpc.add_LatentwatchServicer_to_server(LatentwatchServicer(core), server)
    add_kserve_servicer(core, server)  # KServe v2 / Triton clients, same port
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in HEALTH_SERVICES:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    if settings.reflection_enabled:
        reflection.enable_server_reflection(
            [SERVICE_NAME, KSERVE_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
    running = RunningServer(
        0, metrics_port, health_servicer, core, metrics, settings, server, executor
    )
    try:
        address = f"{settings.host}:{settings.port}"
        running.port = (
            server.add_insecure_port(address) if credentials is None
            else server.add_secure_port(address, credentials)
        )
    except RuntimeError as err:
        await running.stop(0)
        raise LatentwatchError(
            f"cannot serve gRPC on {settings.host}:{settings.port}: {err}"
        ) from err
    await server.start()
    if settings.http_port >= 0:  # KServe v2 REST, on this loop, once the gRPC port is bound
        running._rest = RestServer(
            KServe(core), core, settings, metrics, tokens,
            settings.http_max_body_bytes or receive_bytes,
        )
        try:
            running.http_port = await running._rest.start(
                settings.http_bind_host, settings.http_port, http_context
            )
        except OSError as err:
            await running.stop(0)
            raise LatentwatchError(
                f"cannot serve KServe REST on {settings.http_bind_host}:{settings.http_port}: "
                f"{err}"
            ) from err
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
    await _publish(running, repository)
    if settings.backend == "triton":
        from latentwatch.service.triton_health import TritonHealth  # tritonclient when used

        # Hot reload changes this repository in place: the monitor sees what serves now.
        running.triton = TritonHealth(
            settings, lambda: repository, on_change=lambda: _publish(running, repository)
        )
    running.watcher = RepositoryWatcher(
        settings, repository, metrics, executor,
        on_change=lambda changed: _publish(running, changed),
        retry=None if running.triton is None else running.triton.worth_retrying,
    )
    await running.watcher.adopt()
    running.watcher.start()
    core.watcher = running.watcher
    if running.triton is not None:
        running.triton.on_retry = running.watcher.reload_soon
        running.triton.start()
    if not running.metrics.ready:
        return running
    log.info(
        "serving %d model versions on %s:%d (%s%s, requests up to %.1f MB), metrics on :%d, "
        "KServe REST on %s",
        len(repository), settings.host, running.port,
        "plaintext" if certificates is None else "TLS",
        ", mutual" if settings.tls_client_ca is not None and certificates is not None else "",
        receive_bytes / 1e6, metrics_port,
        f":{running.http_port}" if running.http_port >= 0 else "no port (http_port -1)",
    )
    return running


async def _publish(running: RunningServer, repository: ModelRepository) -> None:
    """Makes the repository visible and health follow it: SERVING while at least one version is
    loaded (on the GPU, when one is required) and, with the Triton backend, Triton is ready;
    NOT_SERVING otherwise."""
    settings = running.settings
    if not len(repository):
        not_ready = "no model version is loaded"
    else:
        not_ready = (running.triton.problem if running.triton is not None else "") or (
            _gpu_problem(repository) if settings.require_gpu else ""
        )
    running.core.set_repository(repository, not_ready)
    status = health_pb2.HealthCheckResponse.NOT_SERVING if not_ready else (
        health_pb2.HealthCheckResponse.SERVING
    )
    first = running.watcher is None  # start-up, before hot reload takes over
    if not_ready and (first or running.metrics.ready):
        log.error("NOT SERVING: %s", not_ready)
    elif not not_ready and not first and not running.metrics.ready:
        log.info("serving again: %d model versions", len(repository))
    for service in HEALTH_SERVICES:
        await running.health.set(service, status)
    running.metrics.ready = not not_ready


def receive_limit(settings: Settings, found: list[tuple[str, str, Path]]) -> int:
    """The largest request message: `max_request_rows` rows of the widest model found, in FP64,
    plus a BiasReport chunk's group labels at their longest (BIAS_CHUNK_ROWS rows) and 1 MiB
    for the rest; never above `max_message_bytes`. A 5-feature model then takes messages of
    about 20 MB, not 256 MiB per concurrent call. A wider model added
    later by hot reload keeps this bound until a restart."""
    widest = 0
    for _, _, version_dir in found:
        try:
            widest = max(widest, Manifest.read(version_dir).n_features)
        except Exception:  # refused at load, with its reason; no bound from it
            continue
    if not widest:
        return settings.max_message_bytes
    labels = BIAS_CHUNK_ROWS * settings.bias_max_group_columns * (settings.bias_max_label_chars + 4)
    rows = settings.max_request_rows * widest * 8
    return min(settings.max_message_bytes, rows + labels + MESSAGE_SLACK)


def server_options(settings: Settings, receive_bytes: int | None = None) -> list[tuple[str, int]]:
    """gRPC server options: message size, keepalive, and how long a connection may live."""
    receive = settings.max_message_bytes if receive_bytes is None else receive_bytes
    options = [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", receive),
        # A taken port is an error, not a shared one, except between workers (service/workers.py).
        ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
        ("grpc.keepalive_time_ms", _ms(settings.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", _ms(settings.keepalive_timeout_s)),
        # Clients may ping as often as the server does; more often ends their connection.
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(settings.keepalive_time_s)),
        ("grpc.max_connection_idle_ms", _ms(settings.max_connection_idle_s)),
    ]
    if settings.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", _ms(settings.max_connection_age_s)),
            # Calls in flight on an aged connection get the time they would get at shutdown.
            ("grpc.max_connection_age_grace_ms", _ms(settings.shutdown_grace_s)),
        ]
    return options


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


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
        if not on_gpu(mv.provider)
    ]
    if not on_cpu:
        return ""
    return (
        f"a GPU is required (require_gpu) but neither {CUDA} nor {TRITON_GPU} is in use for "
        f"{', '.join(on_cpu)}"
    )


async def serve(settings: Settings) -> None:
    """Serves until SIGTERM or SIGINT, then stops cleanly (in-flight calls get
    `settings.shutdown_grace_s`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start_server(settings)
    if running.watcher is not None:  # SIGHUP: one hot-reload pass now (service/reload.py)
        loop.add_signal_handler(signal.SIGHUP, running.watcher.reload_soon)
    await stop.wait()
    log.info("stopping: in-flight calls get up to %.1f s", settings.shutdown_grace_s)
    await running.stop(settings.shutdown_grace_s)
    log.info("stopped")
