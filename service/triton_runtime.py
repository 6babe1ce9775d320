"""The Triton implementation of the runtime contract (service/runtime.py): graphs run remotely.

Each graph of a version is one Triton model, `runtime.triton_model_name` ("<model>.<graph>", as
`latentwatch triton-repo` writes them), at the same version number. Triton batches on
its side (`batches_itself`), so the service's batchers hand requests over without a delay; the
scoring, p-values, bias reports and generation stay here, on the outputs Triton returns.

One `tritonclient.grpc.aio` client (one gRPC channel) per Triton URL and event loop, shared by
every runtime on it (and the readiness monitor, service/triton_health.py) and closed with the
last. The channel reconnects by itself after an outage, with a short backoff, so scoring recovers
when Triton returns; meanwhile calls fail at once with NotReady (UNAVAILABLE) naming the URL.
Loading waits up to `triton_ready_timeout_s` for the model to be ready, then checks Triton's
tensors against the manifest; either failing refuses the version. A refusal because Triton was
unreachable or not ready (`refused_while_unready`) is retried once Triton is ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from tritonclient.grpc import InferInput, InferRequestedOutput, service_pb2
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.grpc.model_config_pb2 import ModelInstanceGroup
from tritonclient.utils import InferenceServerException

from latentwatch.errors import LatentwatchError, NotReady, QueueFull, VersionRefused, quote
from latentwatch.service.runtime import GraphRef, TensorSpec, triton_model_name
from latentwatch.service.settings import Settings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 2**31 - 1  # what gRPC allows; the service's own limits bound requests
READY_POLL_S = 0.25
# Reconnect quickly after an outage: gRPC's default backoff grows to two minutes.
RECONNECT_BACKOFF_MS = (100, 1000)  # first, most
# Triton's statuses for "not reachable now" or "not serving this model now": NotReady.
_UNAVAILABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "NOT_FOUND", "CANCELLED", "UNKNOWN")
# What the messages of "Triton is not reachable or not ready" say after `Triton at URL...`: a
# version refused with one of them is loaded again once Triton is ready (service/triton_health.py).
NOT_READY_AFTER = "not ready after"
IS_UNAVAILABLE = "is unavailable"
DID_NOT_ANSWER = "did not answer within"


@dataclass
class _Shared:
    client: InferenceServerClient
    users: int = 0


# (event loop id, url, CA file) -> the client every runtime on that loop and URL shares.
_clients: dict[tuple[int, str, str], _Shared] = {}


def _key(settings: Settings) -> tuple[int, str, str]:
    return id(asyncio.get_running_loop()), settings.triton_url, str(settings.triton_tls_ca)


def open_client(settings: Settings) -> InferenceServerClient:
    """A client on the running loop for `settings.triton_url`, shared (see the module docstring)."""
    key = _key(settings)
    shared = _clients.get(key)
    if shared is None:
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
            ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
        ]
        tls = settings.triton_tls_ca is not None
        client = InferenceServerClient(
            settings.triton_url, ssl=tls,
            root_certificates=str(settings.triton_tls_ca) if tls else None,
            channel_args=options,
        )
        shared = _clients[key] = _Shared(client)
    shared.users += 1
    return shared.client


async def release_client(settings: Settings) -> None:
    """Gives back a client `open_client` gave; the last user closes it."""
    key = _key(settings)
    shared = _clients.get(key)
    if shared is None:
        return
    shared.users -= 1
    if shared.users <= 0:
        del _clients[key]
        await shared.client.close()


def refused_while_unready(reason: str) -> bool:
    """Whether a refusal's reason is Triton being unreachable or not ready (rather than what the
    version's files or Triton's model are): such a version is worth loading again later."""
    return "Triton at " in reason and any(
        f" {phrase} " in reason for phrase in (NOT_READY_AFTER, IS_UNAVAILABLE, DID_NOT_ANSWER)
    )


def status_name(err: InferenceServerException) -> str:
    return str(err.status() or "").removeprefix("StatusCode.")


def one_line(message: object) -> str:
    """Triton's message for a log line or an error: whitespace folded, cut to a bounded length."""
    return " ".join(str(message).split())[:500]


class TritonRuntime:
    """One graph served by Triton as model `triton_model_name(ref.model, ref.graph)`, version
    `ref.version`. Inputs and outputs are the manifest's (Triton declares a per-row scalar as
    [1]: outputs come back in the manifest's shape)."""

    batches_itself = True

    def __init__(self, ref: GraphRef, settings: Settings) -> None:
        self.ref = ref
        self.model = triton_model_name(ref.model, ref.graph)
        self.version = ref.version
        self._settings = settings
        self.url = settings.triton_url
        self.inputs = tuple(_spec(t.name, t.datatype, t.shape) for t in ref.spec.inputs)
        self.outputs = tuple(_spec(t.name, t.datatype, t.shape) for t in ref.spec.outputs)
        self.provider = ""
        self.max_batch_size = 0  # Triton's, known once loaded
        self._client: InferenceServerClient | None = None
        self._unit_axis: set[str] = set()  # (batch,) inputs Triton declares as [1]: sent (B, 1)

    @property
    def _where(self) -> str:
        return f"Triton at {self.url}: model {quote(self.model)} version {quote(self.version)}"

    async def load(self) -> None:
        """Waits for the model to be ready, then checks its tensors; VersionRefused otherwise."""
        self._client = open_client(self._settings)
        try:
            await self._wait_ready()
            metadata = await self._client.get_model_metadata(self.model, self.version)
            config = (await self._client.get_model_config(self.model, self.version)).config
            if config.max_batch_size < 1:
                raise VersionRefused(
                    f"{self._where} has max_batch_size {config.max_batch_size}: the service "
                    "sends batches, so the model must batch (max_batch_size >= 1)"
                )
            self._check_tensors(metadata)
        except InferenceServerException as err:
            await self.close()
            if status_name(err) in _UNAVAILABLE:  # Triton went away while this loaded
                raise VersionRefused(str(self._error(err))) from err
            raise VersionRefused(f"{self._where}: {one_line(err.message())}") from err
        except BaseException:
            await self.close()
            raise
        self.max_batch_size = int(config.max_batch_size)
        kinds = sorted({ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group})
        self.provider = f"Triton {'+'.join(kinds) or 'KIND_AUTO'}"
        log.debug("%s is ready on %s", self._where, self.provider)

    async def _wait_ready(self) -> None:
        assert self._client is not None
        deadline = time.monotonic() + self._settings.triton_ready_timeout_s
        last = "not ready"
        while True:
            try:
                if await self._client.is_model_ready(self.model, self.version, client_timeout=5):
                    return
                last = "the model is not ready (is it in Triton's repository, at this version?)"
            except InferenceServerException as err:
                last = f"{status_name(err)}: {one_line(err.message())}"
            if time.monotonic() >= deadline:
                raise VersionRefused(
                    f"{self._where} {NOT_READY_AFTER} "
                    f"{self._settings.triton_ready_timeout_s:g} s ({last})"
                )
            await asyncio.sleep(READY_POLL_S)

    def _check_tensors(self, metadata: service_pb2.ModelMetadataResponse) -> None:
        """VersionRefused unless Triton's model takes and gives the manifest's tensors."""
        for what, ours, theirs in (
            ("input", self.inputs, metadata.inputs),
            ("output", self.outputs, metadata.outputs),
        ):
            found = {t.name: t for t in theirs}
            for spec in ours:
                tensor = found.get(spec.name)
                if tensor is None:
                    raise VersionRefused(
                        f"{self._where} has no {what} {spec.name!r} (it has {sorted(found)})"
                    )
                shape = [-1 if isinstance(d, str) else d for d in spec.shape]
                accepted = [shape] + ([[*shape, 1]] if len(shape) == 1 else [])
                if tensor.datatype != spec.datatype or list(tensor.shape) not in accepted:
                    raise VersionRefused(
                        f"{self._where}: {what} {spec.name!r} is {tensor.datatype} "
                        f"{list(tensor.shape)}, the manifest says {spec.datatype} {shape}"
                    )
                if what == "input" and list(tensor.shape) != shape:
                    self._unit_axis.add(spec.name)

    async def infer(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
        """One request per at most `max_batch_size` rows, sent together (Triton batches them)."""
        n = next(iter(feeds.values())).shape[0]
        step = self.max_batch_size
        if n <= step:
            return await self._infer_once(feeds)
        parts = await asyncio.gather(*(
            self._infer_once({k: v[i : i + step] for k, v in feeds.items()})
            for i in range(0, n, step)
        ))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    async def _infer_once(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
        if self._client is None:
            raise NotReady(f"{self._where}: run before load() or after close()")
        inputs = []
        for spec in self.inputs:
            array = np.ascontiguousarray(feeds[spec.name])
            if spec.name in self._unit_axis:
                array = array.reshape(-1, 1)
            tensor = InferInput(spec.name, list(array.shape), spec.datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        wanted = [InferRequestedOutput(spec.name) for spec in self.outputs]
        try:
            result = await self._client.infer(
                self.model, inputs, model_version=self.version, outputs=wanted,
                client_timeout=self._settings.triton_timeout_s,
            )
        except InferenceServerException as err:
            raise self._error(err) from None
        n = inputs[0].shape()[0]
        out = {}
        for spec in self.outputs:
            value = result.as_numpy(spec.name)
            if value is None:
                raise LatentwatchError(f"{self._where} returned no output {spec.name!r}")
            if len(spec.shape) == 1 and value.shape == (n, 1):  # Triton's [1] for a scalar
                value = value.reshape(n)
            out[spec.name] = value
        return out

    def _error(self, err: InferenceServerException) -> LatentwatchError:
        status, message = status_name(err), one_line(err.message())
        if status == "RESOURCE_EXHAUSTED":
            return QueueFull(f"{self._where} is overloaded: {message}")
        if status == "DEADLINE_EXCEEDED":
            return NotReady(
                f"{self._where} {DID_NOT_ANSWER} {self._settings.triton_timeout_s:g} s "
                "(triton_timeout_s)"
            )
        if status in _UNAVAILABLE:
            return NotReady(f"{self._where} {IS_UNAVAILABLE} ({status}: {message})")
        log.error("%s failed: %s: %s", self._where, status, message)
        return LatentwatchError(f"{self._where} failed ({status})")

    async def close(self) -> None:
        if self._client is not None:
            self._client = None
            await release_client(self._settings)


def _spec(name: str, datatype: str, shape: list[int]) -> TensorSpec:
    return TensorSpec(name, datatype, tuple("batch" if d == -1 else d for d in shape))
