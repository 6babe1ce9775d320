"""Health that follows the Triton Inference Server the graphs run on (backend triton).

Loading checked that every graph of a served version was ready in Triton; afterwards Triton may
stop, restart, lose a model or become unreachable. `TritonHealth` asks Triton every
`triton_health_interval_s` whether it is ready and whether the model of each served graph is,
at the version served (`is_server_ready`, `is_model_ready`, over the channel the runtimes share).
`problem` is "" while all of it is ready, else what is not, naming the URL; the server publishes
it as the not-ready reason (service/server.py `_publish`): gRPC health, KServe ServerReady and
ModelReady, REST /v2/health/ready and the ready gauge turn NOT_SERVING and calls get UNAVAILABLE
with that reason until Triton is ready again; then they turn back by themselves.

It also brings back versions refused because Triton was unreachable or not ready when they
loaded (`triton_runtime.refused_while_unready`): hot reload loads such a version again, although
its files did not change, once `worth_retrying` finds Triton and every graph of it ready, and the
monitor asks for a reload pass (`on_retry`) as soon as it finds one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from latentwatch.errors import quote
from latentwatch.repository.manifest import Manifest
from latentwatch.service.loader import SERVED_GRAPHS
from latentwatch.service.repository import ModelRepository, Refusal
from latentwatch.service.runtime import triton_model_name
from latentwatch.service.settings import Settings
from latentwatch.service.triton_runtime import (
    IS_UNAVAILABLE,
    TritonRuntime,
    one_line,
    open_client,
    refused_while_unready,
    release_client,
    status_name,
)

log = logging.getLogger(__name__)

MIN_PROBE_TIMEOUT_S = 1.0  # a readiness call waits at least this (or one interval) for an answer


class TritonHealth:
    """Polls Triton's readiness while serving; `problem` says what is not ready ("" when all is).

    `repository` gives what is served now, `on_change` is awaited when `problem` changes, and
    `on_retry` (hot reload's `reload_soon`, set once the watcher exists) is called when a version
    refused for Triton's readiness could load now and no retry is running.
    """

    def __init__(
        self,
        settings: Settings,
        repository: Callable[[], ModelRepository],
        on_change: Callable[[], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._repository = repository
        self._on_change = on_change
        self.on_retry: Callable[[], asyncio.Task[None]] | None = None
        self.url = settings.triton_url
        self.problem = ""
        self._interval_s = settings.triton_health_interval_s
        self._timeout_s = max(MIN_PROBE_TIMEOUT_S, self._interval_s)
        self._client: InferenceServerClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._retry: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts polling on the running loop (the server's)."""
        if self._task is None:
            self._client = open_client(self._settings)
            self._task = asyncio.create_task(self._poll(), name="latentwatch-triton-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._client is not None:
            self._client = None
            await release_client(self._settings)

    async def check(self) -> str:
        """"" when Triton and the model of every served graph are ready; else what is not."""
        problem = await self._server_problem()
        if problem:
            return problem
        served = sorted({
            (runtime.model, runtime.version)
            for versions in self._repository().versions.values()
            for mv in versions.values()
            for runtime in mv.runtimes
            if isinstance(runtime, TritonRuntime)
        })
        ready = await asyncio.gather(*(self._model_ready(m, v) for m, v in served))
        missing = [
            f"{quote(m)} version {quote(v)}"
            for (m, v), ok in zip(served, ready, strict=True) if not ok
        ]
        if not missing:
            return ""
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        return f"Triton at {self.url}: model {missing[0]}{more} is not ready"

    async def worth_retrying(self, refusal: Refusal, version_dir: Path) -> bool:
        """Whether a version refused with `refusal` could load now although its files did not
        change: it was refused for Triton's readiness, and Triton and every graph it serves
        are ready now."""
        if not refused_while_unready(refusal.reason) or await self._server_problem():
            return False
        try:
            manifest = await asyncio.to_thread(Manifest.read, version_dir)
        except Exception:  # loading it again would refuse it for this; nothing to retry
            return False
        graphs = [g for g in SERVED_GRAPHS if g in manifest.graphs]
        ready = await asyncio.gather(*(
            self._model_ready(triton_model_name(refusal.name, g), refusal.version) for g in graphs
        ))
        return bool(graphs) and all(ready)

    async def _server_problem(self) -> str:
        if self._client is None:
            return f"Triton at {self.url}: readiness is not being checked"
        try:
            if await self._client.is_server_ready(client_timeout=self._timeout_s):
                return ""
            return f"Triton at {self.url} answers but is not ready"
        except InferenceServerException as err:
            status, message = status_name(err), one_line(err.message())
            return f"Triton at {self.url} {IS_UNAVAILABLE} ({status}: {message})"

    async def _model_ready(self, model: str, version: str) -> bool:
        if self._client is None:
            return False
        try:
            return bool(
                await self._client.is_model_ready(model, version, client_timeout=self._timeout_s)
            )
        except InferenceServerException:
            return False

    async def _poll(self) -> None:
        while True:
            try:
                await self._tick()
            except Exception:  # a failed check is logged; serving and the next check go on
                log.exception("checking Triton's readiness at %s failed", self.url)
            await asyncio.sleep(self._interval_s)

    async def _tick(self) -> None:
        problem = await self.check()
        if problem != self.problem:
            self.problem = problem
            await self._on_change()
        if problem or self.on_retry is None or (self._retry is not None and not self._retry.done()):
            return
        repository = self._repository()
        for refusal in list(repository.refused):
            if await self.worth_retrying(refusal, repository.path / refusal.name / refusal.version):
                log.info("Triton at %s is ready: loading refused versions again", self.url)
                self._retry = self.on_retry()
                return
