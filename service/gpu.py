"""What ONNX Runtime is asked for on a GPU, and runs over fixed, preallocated buffers.

- `provider_entries`: the CUDA execution provider's options (device, memory arena and its
  growth, cuDNN's convolution algorithm search, copies on the compute stream, CUDA graphs), and
  TensorRT ahead of CUDA when asked for, with its engine and timing caches on disk so that a
  restart does not rebuild engines. Without CUDA in use, the CPU provider alone, unchanged.
- `BoundRunner`: runs through IOBinding over buffers allocated once per batch size of a fixed
  set ("buckets"): a batch is copied into the smallest bucket that holds it (the rest of the
  bucket keeps earlier rows, whose outputs are never read: rows do not interact in the scorer
  graphs), run, and its rows of the outputs copied back. On CUDA the buffers live on the device
  and each bucket is captured once as a CUDA graph (its own `gpu_graph_id`) and replayed after,
  which removes the per-kernel launch cost that dominates small batches. The same code runs on
  the CPU provider (buffers in host memory, no graphs), which is how it is tested without a GPU.

The CUDA-only parts (device buffers, graph capture) run only where `cuda_unusable_reason()` is
empty; nothing here pretends to run on a GPU when there is none.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from latentwatch.service.runtime import CUDA, TENSORRT
from latentwatch.service.settings import Settings

log = logging.getLogger(__name__)

ProviderEntry = str | tuple[str, dict[str, str]]


@dataclass(frozen=True)
class GpuOptions:
    """The GPU settings (service/settings.py) a session needs."""

    device_id: int = 0
    mem_limit_bytes: int = 0  # 0: no limit
    arena_extend_strategy: str = "kNextPowerOfTwo"  # or kSameAsRequested
    cudnn_conv_algo_search: str = "EXHAUSTIVE"  # or HEURISTIC, DEFAULT
    copy_in_default_stream: bool = True
    cuda_graph_batch_sizes: tuple[int, ...] = ()  # () : no CUDA graphs, plain runs
    tensorrt: bool = False
    tensorrt_cache_dir: Path | None = None
    tensorrt_fp16: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> GpuOptions:
        return cls(
            device_id=settings.cuda_device_id,
            mem_limit_bytes=settings.cuda_mem_limit_bytes,
            arena_extend_strategy=settings.cuda_arena_extend_strategy,
            cudnn_conv_algo_search=settings.cudnn_conv_algo_search,
            copy_in_default_stream=settings.cuda_copy_in_default_stream,
            cuda_graph_batch_sizes=tuple(sorted(set(settings.cuda_graph_batch_sizes))),
            tensorrt=settings.tensorrt,
            tensorrt_cache_dir=settings.tensorrt_cache_dir,
            tensorrt_fp16=settings.tensorrt_fp16,
        )


def cuda_options(gpu: GpuOptions) -> dict[str, str]:
    """The CUDA execution provider's options (ONNX Runtime takes them as strings)."""
    options = {
        "device_id": str(gpu.device_id),
        "arena_extend_strategy": gpu.arena_extend_strategy,
        "cudnn_conv_algo_search": gpu.cudnn_conv_algo_search,
        "do_copy_in_default_stream": "1" if gpu.copy_in_default_stream else "0",
    }
    if gpu.mem_limit_bytes:
        options["gpu_mem_limit"] = str(gpu.mem_limit_bytes)
    if gpu.cuda_graph_batch_sizes:
        options["enable_cuda_graph"] = "1"
    return options


def tensorrt_options(gpu: GpuOptions) -> dict[str, str]:
    """TensorRT's options: engines (and kernel timings) cached on disk when a directory is set,
    so that only the first start after an export builds them."""
    options = {"device_id": str(gpu.device_id),
               "trt_fp16_enable": "1" if gpu.tensorrt_fp16 else "0"}
    if gpu.tensorrt_cache_dir is not None:
        cache = str(gpu.tensorrt_cache_dir)
        options.update(trt_engine_cache_enable="1", trt_engine_cache_path=cache,
                       trt_timing_cache_enable="1", trt_timing_cache_path=cache)
    return options


def provider_entries(
    wanted: Sequence[str], gpu: GpuOptions, available: Sequence[str]
) -> list[ProviderEntry]:
    """`wanted` (service/ort_runtime.session_providers: CUDA first, or CPU alone) with options:
    TensorRT ahead of CUDA when asked for and this build has it (else a warning, and CUDA)."""
    if CUDA not in wanted:
        return list(wanted)
    entries: list[ProviderEntry] = []
    if gpu.tensorrt:
        if TENSORRT in available:
            entries.append((TENSORRT, tensorrt_options(gpu)))
        else:
            _warn_once(f"tensorrt is set but this onnxruntime build has no {TENSORRT}: CUDA only")
    entries.append((CUDA, cuda_options(gpu)))
    entries.extend(p for p in wanted if p not in (CUDA, TENSORRT))
    return entries


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


class BoundRunner:
    """Runs of one session over buffers fixed per batch-size bucket (see the module docstring).

    `device` is "cuda" (buffers on the GPU, one CUDA graph per bucket) or "cpu". Runs are
    serialised: the buffers are shared, and a CUDA graph replays on fixed addresses.
    """

    def __init__(
        self, session: ort.InferenceSession, buckets: Sequence[int], device: str = "cuda",
        device_id: int = 0,
    ) -> None:
        if not buckets or min(buckets) < 1:
            raise ValueError(f"batch-size buckets must be positive, got {list(buckets)}")
        self.buckets = tuple(sorted(set(buckets)))
        self.device = device
        self._session = session
        self._lock = threading.Lock()
        inputs, outputs = session.get_inputs(), session.get_outputs()
        self._input_names = [i.name for i in inputs]
        self._dtypes = {i.name: _NUMPY[i.type] for i in inputs}
        self.output_names = [o.name for o in outputs]
        self._bound: dict[int, tuple[ort.IOBinding, list[ort.OrtValue], list[ort.OrtValue]]] = {}
        self._run_options: dict[int, ort.RunOptions] = {}
        for graph_id, bucket in enumerate(self.buckets):
            feeds = [ort.OrtValue.ortvalue_from_shape_and_type(
                _fixed(i.shape, bucket), _NUMPY[i.type], device, device_id) for i in inputs]
            results = [ort.OrtValue.ortvalue_from_shape_and_type(
                _fixed(o.shape, bucket), _NUMPY[o.type], device, device_id) for o in outputs]
            binding = session.io_binding()
            for info, value in zip(inputs, feeds, strict=True):
                binding.bind_ortvalue_input(info.name, value)
            for info, value in zip(outputs, results, strict=True):
                binding.bind_ortvalue_output(info.name, value)
            self._bound[bucket] = (binding, feeds, results)
            options = ort.RunOptions()
            if device == "cuda":
                options.add_run_config_entry("gpu_graph_id", str(graph_id))
            self._run_options[bucket] = options

    def bucket_for(self, n: int) -> int | None:
        """The smallest bucket that holds n rows (None: more rows than the largest)."""
        return next((b for b in self.buckets if b >= n), None)

    def run(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
        n = next(iter(feeds.values())).shape[0]
        bucket = self.bucket_for(n)
        if bucket is None:
            raise ValueError(f"{n} rows is more than the largest bucket, {self.buckets[-1]}")
        binding, inputs, outputs = self._bound[bucket]
        with self._lock:
            for name, value in zip(self._input_names, inputs, strict=True):
                rows: NDArray = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
                if n < bucket:  # zero rows fill the bucket; their outputs are never read
                    padded = np.zeros(value.shape(), dtype=rows.dtype)
                    padded[:n] = rows
                    rows = padded
                value.update_inplace(rows)
            self._session.run_with_iobinding(binding, self._run_options[bucket])
            return {name: value.numpy()[:n].copy()
                    for name, value in zip(self.output_names, outputs, strict=True)}


_NUMPY = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
}


def _fixed(shape: Sequence[int | str | None], batch: int) -> list[int]:
    """A graph tensor's shape with its batch axis set; other axes must be fixed already."""
    rest = [d for d in shape[1:] if isinstance(d, int) and d > 0]
    if len(rest) != len(shape) - 1:
        raise ValueError(f"shape {list(shape)} has dynamic axes besides the batch axis")
    return [batch, *rest]
