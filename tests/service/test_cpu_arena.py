"""Where CPU sessions keep their tensors between nodes (settings.ort_cpu_arena): the setting
reaches the session ONNX Runtime runs, a session that may run on CUDA keeps the defaults, and
with the shared arena the memory of many scored sessions stops growing with their number."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
from repo_builder import build_version

from latentwatch.repository.layout import SCORER_FILE
from latentwatch.service import ort_runtime
from latentwatch.service.ort_runtime import (
    CPU_ARENAS,
    USE_ENV_ALLOCATORS,
    OrtRuntime,
    cuda_unusable_reason,
    session_options,
)
from latentwatch.service.runtime import CPU, CUDA, make_runtime
from latentwatch.service.settings import Settings

needs_cpu_only = pytest.mark.skipif(
    not cuda_unusable_reason(), reason="CUDA runs here: sessions keep ONNX Runtime's defaults"
)


def _config(options: ort.SessionOptions, key: str) -> str | None:
    try:
        return str(options.get_session_config_entry(key))
    except RuntimeError:  # ONNX Runtime's answer for a key never set
        return None


def _arena_of(options: ort.SessionOptions) -> str:
    """Which of CPU_ARENAS the options ask for."""
    if _config(options, USE_ENV_ALLOCATORS) == "1":
        assert options.enable_cpu_mem_arena
        return "shared"
    return "session" if options.enable_cpu_mem_arena else "off"


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_version(tmp_path_factory.mktemp("arena"), "m", "1") / SCORER_FILE


def test_the_default_is_the_shared_arena() -> None:
    assert Settings().ort_cpu_arena == "shared"
    assert OrtRuntime(Path("unused.onnx")).cpu_arena == "shared"


@needs_cpu_only
@pytest.mark.parametrize("arena", CPU_ARENAS)
def test_the_loaded_session_runs_with_the_arena_asked_for(scorer: Path, arena: str) -> None:
    runtime = OrtRuntime(scorer, 1, cpu_arena=arena)
    assert runtime.session_options is None  # not loaded yet
    runtime.load_blocking()
    assert runtime.provider == CPU
    assert runtime.session_options is not None
    assert _arena_of(runtime.session_options) == arena


@needs_cpu_only
def test_the_setting_reaches_the_runtime(scorer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTWATCH_ORT_CPU_ARENA", "off")
    runtime = asyncio.run(make_runtime(scorer, Settings()))
    assert isinstance(runtime, OrtRuntime)
    assert runtime.session_options is not None
    assert _arena_of(runtime.session_options) == "off"


def test_an_unknown_arena_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTWATCH_ORT_CPU_ARENA", "pooled")
    with pytest.raises(ValueError, match="ort_cpu_arena"):
        Settings()
    with pytest.raises(ValueError, match="cpu_arena must be one of"):
        OrtRuntime(Path("unused.onnx"), cpu_arena="pooled")


def test_a_session_that_may_run_on_cuda_keeps_the_defaults(
    scorer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The arena choice is the CPU provider's: with CUDA asked for, the options are ONNX
    Runtime's defaults (the CUDA arena's options are gpu.py's). The session itself runs on CPU
    here (provider_entries answers CPU alone), so this holds on any machine."""
    asked: list[str | None] = []

    def recording(threads: int, cpu_arena: str | None, spin_wait: bool = False
                  ) -> ort.SessionOptions:
        asked.append(cpu_arena)
        return session_options(threads, cpu_arena, spin_wait)

    monkeypatch.setattr(ort_runtime, "session_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort_runtime, "provider_entries", lambda wanted, gpu, available: [CPU])
    monkeypatch.setattr(ort_runtime, "session_options", recording)
    monkeypatch.setattr(ort_runtime, "_cuda_failed", False)  # restored after: it falls back
    runtime = OrtRuntime(scorer, 1, cpu_arena="off")
    runtime.load_blocking()
    assert asked == [None]
    assert runtime.session_options is not None
    assert _arena_of(runtime.session_options) == "session"  # ONNX Runtime's default
    defaults = session_options(1, None)
    assert defaults.enable_cpu_mem_arena and defaults.enable_mem_pattern
    assert _config(defaults, USE_ENV_ALLOCATORS) is None


# A child process: SESSIONS sessions of a graph with two 16 MB intermediates at 256 rows (a
# tile of the input to 16,384 columns, then Relu), each scored once; prints the RSS growth.
_GROWTH = """
import json, sys
import numpy as np, onnx, psutil
from onnx import TensorProto, helper
from latentwatch.service.ort_runtime import OrtRuntime

path, arena, sessions = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 256])
y = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])
repeats = helper.make_tensor("repeats", TensorProto.INT64, [2], [1, 64])
nodes = [helper.make_node("Tile", ["input", "repeats"], ["wide"]),
         helper.make_node("Relu", ["wide"], ["relu"]),
         helper.make_node("ReduceSum", ["relu"], ["score"], keepdims=0, axes=[1])]
graph = helper.make_graph(nodes, "wide", [x], [y], initializer=[repeats])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=8)
onnx.save(model, path)
rows = np.ones((256, 256), dtype=np.float32)
def scored():
    runtime = OrtRuntime(path, 1, cpu_arena=arena)
    runtime.load_blocking()
    assert runtime.run({"input": rows})["score"].shape == (256,)
    return runtime
me = psutil.Process()
kept = [scored()]  # the first: the shared arena grows once, like a per-session one
start = me.memory_info().rss
kept += [scored() for _ in range(sessions)]
print(json.dumps({"growth_mb": (me.memory_info().rss - start) / 2**20}))
"""
SESSIONS = 8


def _growth_mb(tmp_path: Path, arena: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _GROWTH, str(tmp_path / f"{arena}.onnx"), arena, str(SESSIONS)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return float(json.loads(done.stdout)["growth_mb"])


@needs_cpu_only
def test_scored_sessions_share_one_arena(tmp_path: Path) -> None:
    """Per session, each of the 8 keeps an arena of at least its 2 x 16 MB run (more than
    256 MB together); shared, they reuse the first one's."""
    per_session = _growth_mb(tmp_path, "session")
    shared = _growth_mb(tmp_path, "shared")
    assert per_session > SESSIONS * 24, per_session
    assert shared < per_session / 4, (shared, per_session)
