"""ONNX Runtime sessions for checking exported graphs (always on CPU, the reference provider)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

# Checking is offline work beside other jobs: a couple of threads is plenty, and ONNX Runtime's
# own default ignores container CPU limits.
MAX_THREADS = 2


def cpu_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = min(MAX_THREADS, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(
    session: ort.InferenceSession, input_name: str, rows: NDArray[np.float32]
) -> dict[str, NDArray[np.float32]]:
    """Every output of the session by name for one batch of rows."""
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {input_name: np.ascontiguousarray(rows, dtype=np.float32)})
    return {name: np.asarray(value) for name, value in zip(names, values, strict=True)}
