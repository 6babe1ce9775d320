"""The runtime contract: one loaded graph the batcher and the loader run, whatever executes it.

ONNX Runtime in this process implements it (service/ort_runtime.py), and so does a remote
Triton Inference Server (service/triton_runtime.py, over an asyncio gRPC channel that belongs to
the server's event loop); `settings.backend` picks one. Tests use fakes of it (a summing runtime,
a failing runtime).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from numpy.typing import NDArray

from latentwatch.repository.manifest import GraphSpec
from latentwatch.service.settings import Settings

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"  # asked for ahead of CUDA with the tensorrt setting
# The provider of a graph Triton runs on its GPU instances (service/triton_runtime.py).
TRITON_GPU = "Triton KIND_GPU"


def on_gpu(provider: str) -> bool:
    """Whether a runtime's `provider` runs on a GPU (the one rule `require_gpu` checks)."""
    return provider in (CUDA, TENSORRT, TRITON_GPU)


def triton_model_name(model: str, graph: str) -> str:
    """The Triton model that serves one graph of a latentwatch model, e.g. "digits-vae.scorer":
    the names export/triton.py writes and service/triton_runtime.py asks for. Graph names have no
    dot, so two (model, graph) pairs never share a name."""
    return f"{model}.{graph}"


@dataclass(frozen=True)
class GraphRef:
    """Which graph of which version a runtime runs, as its manifest lists it: what a remote
    tier that serves graphs by name needs (a local runtime needs only the file)."""

    model: str
    version: str
    graph: str  # "scorer", "encoder", ...
    spec: GraphSpec


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: its name, v2 datatype ("FP32", ...) and shape ("batch" axes)."""

    name: str
    datatype: str
    shape: tuple[int | str, ...]


class Runtime(Protocol):
    """One graph: `await load()` once, `await infer(feeds)` many times, `await close()` once.

    All three are awaited on the server's event loop and must not block it: blocking work
    (creating an ONNX Runtime session, running it) goes to an executor inside the
    implementation. `infer` is called by one batcher at a time per runtime (and by the loader's
    warm-up and a bias report's decode). A runtime that `batches_itself` (a Triton server) gets
    requests without a batching delay (service/loader.py); the others get the batcher's batches.
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    provider: str  # where it runs, e.g. CUDA or CPU
    batches_itself: bool

    async def load(self) -> None: ...

    async def infer(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]: ...

    async def close(self) -> None: ...


def input_names(runtime: Runtime) -> tuple[str, ...]:
    return tuple(spec.name for spec in runtime.inputs)


def output_names(runtime: Runtime) -> tuple[str, ...]:
    return tuple(spec.name for spec in runtime.outputs)


async def make_runtime(
    path: Path,
    settings: Settings,
    executor: Executor | None = None,
    sha256: str | None = None,
    ref: GraphRef | None = None,
) -> Runtime:
    """The runtime for the graph file `path`, loaded, on the backend the settings name.

    onnxruntime: a session in this process (its blocking work in `executor`; None: the loop's
    default), with `sha256` from the file's bytes checked against it. triton: the Triton model
    of `ref` on `settings.triton_url`, once Triton reports it ready (the file is not opened).
    """
    if settings.backend == "triton":
        from latentwatch.service.triton_runtime import TritonRuntime  # tritonclient when used

        if ref is None:
            raise ValueError(f"{path}: the Triton backend needs the graph's model and version")
        triton = TritonRuntime(ref, settings)
        await triton.load()
        return triton
    from latentwatch.service.gpu import GpuOptions  # onnxruntime only when used
    from latentwatch.service.ort_runtime import OrtRuntime

    runtime = OrtRuntime(
        path, settings.intra_op_threads, executor,
        sha256=sha256, max_bytes=settings.max_model_file_bytes,
        async_max_rows=settings.ort_async_max_rows, gpu=GpuOptions.from_settings(settings),
        cpu_arena=settings.ort_cpu_arena,
        spin_wait=settings.ort_spin_wait,
    )
    await runtime.load()
    return runtime


def usable_cpu_count() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota.

    ONNX Runtime sizes its thread pool from the machine's core count and ignores container
    limits, which oversubscribes a throttled container badly.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 cpu.max, else v1 cfs quota); None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None

