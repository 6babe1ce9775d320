"""ONNX Runtime sessions for checking exported graphs (always on CPU, the reference provider).

Asking for CPU only also keeps checks quiet where CUDA cannot run; where the server runs its
graphs is decided in one place, service/ort_runtime.py `session_providers`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from latentwatch.service.runtime import CPU

# Checking is offline work beside other jobs: a couple of threads is plenty, and ONNX Runtime's
# own default ignores container CPU limits.
MAX_THREADS = 2


def cpu_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = min(MAX_THREADS, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=[CPU])


def run_session(
    session: ort.InferenceSession, input_name: str, rows: NDArray[np.float32]
) -> dict[str, NDArray[np.float32]]:
    """Every output of the session by name for one batch of rows."""
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {input_name: np.ascontiguousarray(rows, dtype=np.float32)})
    return {name: np.asarray(value) for name, value in zip(names, values, strict=True)}
