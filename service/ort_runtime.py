"""The ONNX Runtime implementation of the runtime contract (service/runtime.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import Executor
from pathlib import Path

import onnxruntime as ort
from numpy.typing import NDArray

from latentwatch.service.runtime import CPU, CUDA, TensorSpec, usable_cpu_count

log = logging.getLogger(__name__)

# ONNX Runtime's type strings -> v2 datatypes (those the exported graphs use).
_V2_OF_ORT = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
    "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8", "tensor(int8)": "INT8",
}

# onnxruntime-gpu lists CUDA as available even on machines without a GPU (or without the CUDA
# libraries) and then logs an error for every session it falls back on. Once one session has
# fallen back, later sessions in this process ask for CPU only: the answer will not change.
_cuda_failed = False


def _spec(arg: ort.NodeArg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else str(d) for d in arg.shape)
    return TensorSpec(arg.name, _V2_OF_ORT.get(arg.type, arg.type), shape)


class OrtRuntime:
    """An InferenceSession, CUDA first when this onnxruntime build offers it, else CPU.

    On the event loop, `load` and `infer` run the blocking `load_blocking` and `run` in
    `executor` (None: the loop's default). Offline scoring and benchmarks call the blocking
    pair directly (`OrtRuntime.open`, then `run`) from any thread.
    """

    batches_itself = False

    def __init__(
        self, path: Path, intra_op_threads: int = 0, executor: Executor | None = None
    ) -> None:
        self.path = path
        self.intra_op_threads = intra_op_threads or usable_cpu_count()
        self._executor = executor
        self._session: ort.InferenceSession | None = None
        self.provider = ""
        self.inputs: tuple[TensorSpec, ...] = ()
        self.outputs: tuple[TensorSpec, ...] = ()
        self._output_names: list[str] = []

    @classmethod
    def open(cls, path: Path, intra_op_threads: int = 0) -> OrtRuntime:
        """A runtime for `path`, loaded now (blocking; for offline scoring and benchmarks)."""
        runtime = cls(path, intra_op_threads)
        runtime.load_blocking()
        return runtime

    async def load(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.load_blocking)

    def load_blocking(self) -> None:
        """Creates the session (any thread): the provider, inputs and outputs are known after."""
        global _cuda_failed
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        # One run at a time per session (the batcher serialises them): no inter-op pool needed.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        wanted = [CPU]
        if CUDA in ort.get_available_providers() and not _cuda_failed:
            wanted.insert(0, CUDA)
        session = ort.InferenceSession(str(self.path), sess_options=options, providers=wanted)
        # The first provider is the one actually in use; CUDA silently drops out on failure.
        self.provider = session.get_providers()[0]
        if CUDA in wanted and self.provider != CUDA:
            _cuda_failed = True
        self.inputs = tuple(_spec(i) for i in session.get_inputs())
        self.outputs = tuple(_spec(o) for o in session.get_outputs())
        self._output_names = [o.name for o in self.outputs]
        self._session = session
        log.debug("loaded %s on %s", self.path, self.provider)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self._output_names)

    def run(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
        """One blocking run (any thread)."""
        if self._session is None:
            raise RuntimeError(f"{self.path}: run before load() or after close()")
        outputs = self._session.run(self._output_names, dict(feeds))
        return dict(zip(self._output_names, outputs, strict=True))

    async def infer(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.run, feeds)

    async def close(self) -> None:
        self._session = None  # freed once no run in flight still holds it
