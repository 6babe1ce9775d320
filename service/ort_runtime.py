"""The ONNX Runtime implementation of the runtime contract (service/runtime.py)."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Executor
from pathlib import Path

import onnxruntime as ort
from numpy.typing import NDArray

from latentwatch.repository.files import read_verified
from latentwatch.service.gpu import BoundRunner, GpuOptions, provider_entries
from latentwatch.service.runtime import CPU, CUDA, TensorSpec, on_gpu, usable_cpu_count

log = logging.getLogger(__name__)

# ONNX Runtime's type strings -> v2 datatypes (those the exported graphs use).
_V2_OF_ORT = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
    "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8", "tensor(int8)": "INT8",
}

# onnxruntime-gpu lists CUDA as available even on machines without a GPU (or without the CUDA
# libraries), and a session that asks for it then logs a red ONNX Runtime error before falling
# back. `cuda_unusable_reason` loads what the CUDA provider needs first, so sessions ask for CUDA
# only where it can run. Should a session still fall back, later ones ask for CPU only.
_cuda_failed = False
# The provider library ONNX Runtime loads for CUDA, beside its own library.
_CUDA_PROVIDER_LIBRARY = "libonnxruntime_providers_cuda.so"


@functools.cache
def cuda_unusable_reason() -> str:
    """Why CUDA cannot run in this process ('' when it can): the one "can CUDA run here" check.

    Checks what ONNX Runtime would otherwise find out noisily: the build offers CUDA, the
    provider library and the CUDA libraries it links load, and the driver sees a device.
    """
    if CUDA not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider"
    provider = Path(ort.__file__).parent / "capi" / _CUDA_PROVIDER_LIBRARY
    if provider.exists():  # elsewhere (a non-Linux build) ONNX Runtime finds out for itself
        try:
            ctypes.CDLL(str(provider))
        except OSError as err:  # only a missing library is certain; ONNX Runtime judges the rest
            if "cannot open shared object file" in str(err):
                return f"{str(err).split(': ')[0]} is missing"
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1)"
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return "the NVIDIA driver does not initialise"
    if count.value < 1:
        return "no CUDA device"
    return ""


def session_providers() -> list[str]:
    """The providers a session asks for: CUDA first where it can run, else CPU only."""
    reason = "a session fell back from it" if _cuda_failed else cuda_unusable_reason()
    if reason:
        _log_cpu_once(reason)
        return [CPU]
    return [CUDA, CPU]


@functools.cache
def _log_cpu_once(reason: str) -> None:
    log.info("CUDA is not usable here (%s): running on CPU", reason)


# Where a CPU session's tensors between nodes live (settings.ort_cpu_arena): "shared", one
# memory arena for every session of the process, grown to the most that runs at once need;
# "session", ONNX Runtime's default, an arena per session, grown to its largest run and never
# shrunk (each loaded version keeps its own, about 70 MB for 256 rows of the 16-draw
# Fashion-MNIST VAE); "off", plain malloc and free on every run.
# benchmarks/results/ort_memory.json has what each costs in memory and rows/s.
CPU_ARENAS = ("shared", "session", "off")
USE_ENV_ALLOCATORS = "session.use_env_allocators"
_shared_arena_lock = threading.Lock()
_shared_arena_registered = False


def _register_shared_cpu_arena() -> None:
    """Registers the process's one CPU arena with ONNX Runtime's environment (once)."""
    global _shared_arena_registered
    with _shared_arena_lock:
        if not _shared_arena_registered:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                     ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, None)  # None: the default arena settings
            _shared_arena_registered = True


def session_options(
    intra_op_threads: int, cpu_arena: str | None, spin_wait: bool = False
) -> ort.SessionOptions:
    """A session's options; `cpu_arena` one of CPU_ARENAS, or None for ONNX Runtime's
    defaults (a session that may run on CUDA: its memory is gpu.py's, and unchanged)."""
    if cpu_arena is not None and cpu_arena not in CPU_ARENAS:
        raise ValueError(f"cpu_arena must be one of {list(CPU_ARENAS)}, got {cpu_arena!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    # One run at a time per session (the batcher serialises them): no inter-op pool needed.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads sleep instead of spinning (unless `spin_wait`): a spinning thread takes
    # a core from the event loop and the other sessions between runs (README "Performance").
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
    if cpu_arena == "shared":
        _register_shared_cpu_arena()
        options.add_session_config_entry(USE_ENV_ALLOCATORS, "1")
    elif cpu_arena == "off":
        options.enable_cpu_mem_arena = False
    return options


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
        self,
        path: Path,
        intra_op_threads: int = 0,
        executor: Executor | None = None,
        *,
        sha256: str | None = None,
        max_bytes: int | None = None,
        async_max_rows: int = 0,
        gpu: GpuOptions | None = None,
        cpu_arena: str = "shared",
        spin_wait: bool = False,
    ) -> None:
        if cpu_arena not in CPU_ARENAS:
            raise ValueError(f"cpu_arena must be one of {list(CPU_ARENAS)}, got {cpu_arena!r}")
        self.path = path
        # CPU_ARENAS: asked for by a CPU-only session; one that may run on CUDA keeps the
        # defaults, its memory being the CUDA provider's (gpu.py).
        self.cpu_arena = cpu_arena
        self.spin_wait = spin_wait  # ONNX Runtime's pool threads spin between runs
        # Runs of at most this many rows go to ONNX Runtime's own thread (run_async) and
        # complete by callback, without a round trip through `executor` (0: never).
        self.async_max_rows = async_max_rows
        self._gpu = gpu or GpuOptions()
        # Runs over fixed buffers and CUDA graphs, for batches a bucket holds (CUDA only).
        self._bound: BoundRunner | None = None
        # With the manifest's sha256, the session is made from the bytes checked against it
        # (no window between the check and ONNX Runtime opening the file; no external data).
        self._sha256, self._max_bytes = sha256, max_bytes
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
        wanted = session_providers()
        options = session_options(self.intra_op_threads,
                                  None if CUDA in wanted else self.cpu_arena, self.spin_wait)
        model: str | bytes = str(self.path)
        if self._sha256 is not None:
            limit = self._max_bytes if self._max_bytes is not None else 2**62
            model = read_verified(self.path.parent, self.path.name, self._sha256, limit)
        entries = provider_entries(wanted, self._gpu, ort.get_available_providers())
        session = ort.InferenceSession(model, sess_options=options, providers=entries)
        # The first provider is the one actually in use; CUDA silently drops out on failure.
        self.provider = session.get_providers()[0]
        if CUDA in wanted and not on_gpu(self.provider):
            _cuda_failed = True
        if self.provider == CUDA and self._gpu.cuda_graph_batch_sizes:
            self._bound = BoundRunner(session, self._gpu.cuda_graph_batch_sizes, "cuda",
                                      self._gpu.device_id)
        self.inputs = tuple(_spec(i) for i in session.get_inputs())
        self.outputs = tuple(_spec(o) for o in session.get_outputs())
        self._output_names = [o.name for o in self.outputs]
        self._session = session
        log.debug("loaded %s on %s", self.path, self.provider)

    @property
    def session_options(self) -> ort.SessionOptions | None:
        """The options the loaded session runs with, as ONNX Runtime reports them."""
        return None if self._session is None else self._session.get_session_options()

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
        bound = self._bound
        if bound is not None and bound.bucket_for(next(iter(feeds.values())).shape[0]):
            return bound.run(feeds)
        outputs = self._session.run(self._output_names, dict(feeds))
        return dict(zip(self._output_names, outputs, strict=True))

    async def infer(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
        loop = asyncio.get_running_loop()
        if self._runs_async(feeds):
            return await self._infer_async(loop, feeds)
        return await loop.run_in_executor(self._executor, self.run, feeds)

    def _runs_async(self, feeds: Mapping[str, NDArray]) -> bool:
        """Small runs on ONNX Runtime's thread: a run there has that one thread only (the
        intra-op pool's other threads stay idle), which costs large batches their parallelism
        but saves small ones the executor's hand-offs. It needs a pool thread to run on."""
        if (not self.async_max_rows or self.intra_op_threads < 2 or self._session is None
                or self._bound is not None):
            return False
        rows = next(iter(feeds.values())).shape[0]
        return bool(rows <= self.async_max_rows)

    async def _infer_async(
        self, loop: asyncio.AbstractEventLoop, feeds: Mapping[str, NDArray]
    ) -> dict[str, NDArray]:
        assert self._session is not None  # checked by _runs_async
        done: asyncio.Future[dict[str, NDArray]] = loop.create_future()
        names = self._output_names

        def settle(results: list[NDArray], error: str) -> None:  # on the loop
            if done.done():  # the caller left (cancelled) meanwhile
                return
            if error:
                done.set_exception(RuntimeError(f"{self.path.name}: {error}"))
            else:
                done.set_result(dict(zip(names, results, strict=True)))

        def finished(results: list[NDArray], user_data: object, error: str) -> None:
            try:  # on ONNX Runtime's thread
                loop.call_soon_threadsafe(settle, results, error)
            except RuntimeError:  # the loop closed first (shutdown): nobody waits for it
                pass

        self._session.run_async(names, dict(feeds), finished, None)
        return await done

    async def close(self) -> None:
        self._bound = None
        self._session = None  # freed once no run in flight still holds it
