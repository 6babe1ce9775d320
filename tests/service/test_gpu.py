"""GPU readiness (service/gpu.py): the provider options a session asks for, and runs over fixed
buffers per batch-size bucket. The bucketed runner is exercised on the CPU provider here; the
CUDA graph test runs only where CUDA can run, and says why it is skipped elsewhere."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from repo_builder import reference_outputs

from latentwatch.repository.layout import SCORER_FILE
from latentwatch.service.gpu import BoundRunner, GpuOptions, cuda_options, provider_entries
from latentwatch.service.ort_runtime import OrtRuntime, cuda_unusable_reason
from latentwatch.service.runtime import CPU, CUDA, TENSORRT, on_gpu
from latentwatch.service.settings import Settings


def _scorer(repo: Path) -> Path:
    return repo / "img-vae" / "1" / SCORER_FILE


def test_without_cuda_the_cpu_provider_is_asked_for_alone_and_unchanged() -> None:
    gpu = GpuOptions(tensorrt=True, cuda_graph_batch_sizes=(1, 8))
    assert provider_entries([CPU], gpu, [CUDA, TENSORRT, CPU]) == [CPU]


def test_the_settings_become_the_cuda_providers_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTWATCH_CUDA_DEVICE_ID", "1")
    monkeypatch.setenv("LATENTWATCH_CUDA_MEM_LIMIT_BYTES", str(2**31))
    monkeypatch.setenv("LATENTWATCH_CUDA_ARENA_EXTEND_STRATEGY", "kSameAsRequested")
    monkeypatch.setenv("LATENTWATCH_CUDNN_CONV_ALGO_SEARCH", "HEURISTIC")
    monkeypatch.setenv("LATENTWATCH_CUDA_GRAPH_BATCH_SIZES", "[64, 1, 8, 8]")
    gpu = GpuOptions.from_settings(Settings())
    assert gpu.cuda_graph_batch_sizes == (1, 8, 64)  # sorted, once each
    assert provider_entries([CUDA, CPU], gpu, [CUDA, CPU]) == [
        (CUDA, {"device_id": "1", "arena_extend_strategy": "kSameAsRequested",
                "cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": "1",
                "gpu_mem_limit": str(2**31), "enable_cuda_graph": "1"}),
        CPU,
    ]
    assert "enable_cuda_graph" not in cuda_options(GpuOptions())
    assert "gpu_mem_limit" not in cuda_options(GpuOptions())  # 0: no limit


def test_a_batch_size_that_is_not_positive_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTWATCH_CUDA_GRAPH_BATCH_SIZES", "[8, 0]")
    with pytest.raises(ValueError, match="cuda_graph_batch_sizes"):
        Settings()


def test_tensorrt_goes_ahead_of_cuda_with_its_engine_cache(tmp_path: Path) -> None:
    gpu = GpuOptions(tensorrt=True, tensorrt_cache_dir=tmp_path, tensorrt_fp16=True)
    entries = provider_entries([CUDA, CPU], gpu, [TENSORRT, CUDA, CPU])
    assert [e[0] if isinstance(e, tuple) else e for e in entries] == [TENSORRT, CUDA, CPU]
    trt = dict(entries[0][1])  # type: ignore[arg-type]
    assert trt["trt_engine_cache_enable"] == "1" and trt["trt_engine_cache_path"] == str(tmp_path)
    assert trt["trt_timing_cache_path"] == str(tmp_path) and trt["trt_fp16_enable"] == "1"
    assert on_gpu(TENSORRT)  # require_gpu counts it


def test_tensorrt_missing_from_the_build_warns_and_keeps_cuda(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="latentwatch.service.gpu"):
        entries = provider_entries([CUDA, CPU], GpuOptions(tensorrt=True), [CUDA, CPU])
    assert [e[0] if isinstance(e, tuple) else e for e in entries] == [CUDA, CPU]
    assert TENSORRT in caplog.text


def test_bucketed_runs_over_fixed_buffers_agree_with_plain_runs(synthetic_repo: Path) -> None:
    session = ort.InferenceSession(str(_scorer(synthetic_repo)), providers=[CPU])
    runner = BoundRunner(session, (4, 1, 16), device="cpu")
    assert runner.buckets == (1, 4, 16)
    assert [runner.bucket_for(n) for n in (1, 2, 4, 5, 16, 17)] == [1, 4, 4, 16, 16, None]
    rng = np.random.default_rng(3)
    for n in (16, 3, 1, 5, 2):  # a smaller batch after a larger one in the same bucket
        rows = rng.normal(size=(n, 64)).astype(np.float32)
        got = runner.run({"input": rows})
        want = dict(zip(runner.output_names, session.run(runner.output_names, {"input": rows}),
                        strict=True))
        assert got.keys() == want.keys()
        for name in got:
            assert got[name].shape[0] == n, name
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got["neg_elbo"], reference_outputs(rows, "vae", 4)["neg_elbo"],
                                   rtol=1e-5)
    with pytest.raises(ValueError, match="largest bucket, 16"):
        runner.run({"input": np.ones((17, 64), dtype=np.float32)})


def test_a_graph_with_fixed_axes_besides_the_batch_is_required(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "width"])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "width"])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["out"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, tmp_path / "g.onnx")
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=[CPU])
    with pytest.raises(ValueError, match="dynamic axes besides the batch axis"):
        BoundRunner(session, (4,), device="cpu")


@pytest.mark.skipif(bool(cuda_unusable_reason()),
                    reason=f"CUDA cannot run here: {cuda_unusable_reason() or 'it can'}")
def test_on_a_gpu_cuda_graph_runs_agree_with_the_cpu(synthetic_repo: Path) -> None:
    path = _scorer(synthetic_repo)
    runtime = OrtRuntime(path, 1, gpu=GpuOptions(cuda_graph_batch_sizes=(1, 8)))
    runtime.load_blocking()
    assert runtime.provider == CUDA
    cpu = ort.InferenceSession(str(path), providers=[CPU])
    rng = np.random.default_rng(4)
    for n in (8, 1, 5, 8, 20):  # 20: more than the largest bucket, a plain CUDA run
        rows = rng.normal(size=(n, 64)).astype(np.float32)
        got = runtime.run({"input": rows})
        want = dict(zip(runtime.output_names, cpu.run(list(runtime.output_names),
                                                      {"input": rows}), strict=True))
        for name in got:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4)
