"""The runtime contract and its ONNX Runtime implementation.

The batcher and the repository only see `Runtime`; tests use fakes of it (a summing runtime,
a failing runtime), and a remote inference tier can implement it later.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import onnxruntime as ort
from numpy.typing import NDArray

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class Runtime(Protocol):
    """One loaded graph. `run` must be safe to call from a worker thread."""

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    provider: str

    def run(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]: ...


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


# onnxruntime-gpu lists CUDA as available even on machines without a GPU (or without the CUDA
# libraries) and then logs an error for every session it falls back on. Once one session has
# fallen back, later sessions in this process ask for CPU only: the answer will not change.
_cuda_failed = False


class OrtRuntime:
    """An InferenceSession, CUDA first when this onnxruntime build offers it, else CPU."""

    def __init__(self, path: Path, intra_op_threads: int = 0) -> None:
        global _cuda_failed
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads or usable_cpu_count()
        # One run at a time per session (the batcher serialises them): no inter-op pool needed.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        wanted = [CPU]
        if CUDA in ort.get_available_providers() and not _cuda_failed:
            wanted.insert(0, CUDA)
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
        # The first provider is the one actually in use; CUDA silently drops out on failure.
        self.provider: str = self._session.get_providers()[0]
        if CUDA in wanted and self.provider != CUDA:
            _cuda_failed = True
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.output_names = tuple(o.name for o in self._session.get_outputs())
        self.path = path
        self.intra_op_threads: int = options.intra_op_num_threads
        log.debug("loaded %s on %s", path, self.provider)

    def run(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
        outputs = self._session.run(list(self.output_names), dict(feeds))
        return dict(zip(self.output_names, outputs, strict=True))
