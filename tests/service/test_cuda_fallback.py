"""Where CUDA cannot run, a server start says so in one INFO line, not an ONNX Runtime error."""

from __future__ import annotations

from pathlib import Path

import grpc
from test_process import free_port, serve, wait_until_serving

from latentwatch.service.ort_runtime import cuda_unusable_reason, session_providers
from latentwatch.service.runtime import CPU, CUDA


def test_session_providers_follow_the_one_cuda_check() -> None:
    reason = cuda_unusable_reason()
    assert session_providers() == ([CPU] if reason else [CUDA, CPU])


def test_a_server_start_writes_no_onnxruntime_error(synthetic_repo: Path, tmp_path: Path) -> None:
    port = free_port()
    process = serve(synthetic_repo, port, free_port(), tmp_path)
    stderr_log = tmp_path / "stderr.txt"
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            wait_until_serving(channel, process, stderr_log)
    finally:
        process.terminate()
        process.wait(timeout=30)
    lines = [line for line in stderr_log.read_text().splitlines()
             if not line.startswith("import time:")]
    errors = [line for line in lines if "[E:onnxruntime" in line or " ERROR " in line
              or "Failed to load library" in line or "Failed to create CUDAExecutionProvider"
              in line]
    assert not errors, "\n".join(errors)
    fallback = [line for line in lines if "CUDA is not usable here" in line]
    if cuda_unusable_reason():
        assert len(fallback) == 1 and " INFO " in fallback[0], "\n".join(lines)
        assert fallback[0].endswith("): running on CPU")
    else:
        assert not fallback
