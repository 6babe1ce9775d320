"""The in-process measurements of benchmarks/throughput.py: (a) ONNX Runtime's `run` on the
scorer and (e) PyOD's VAE decision_function, one caller each, timed call by call."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from latentwatch.repository.layout import SCORER_FILE

logger = logging.getLogger("throughput")


def timed_loop(fn: Callable[[], Any], warmup_s: float, duration_s: float
               ) -> tuple[int, list[float]]:
    """Calls fn() for warmup_s, then for duration_s; returns (calls, per-call seconds)."""
    end_s = time.perf_counter() + warmup_s
    while time.perf_counter() < end_s:
        fn()
    times_s: list[float] = []
    end_s = time.perf_counter() + duration_s
    while (start_s := time.perf_counter()) < end_s:
        fn()
        times_s.append(time.perf_counter() - start_s)
    return len(times_s), times_s


def in_process_row(name: str, rows: int, calls: int, times_s: list[float]) -> dict:
    """A measurement row in the shape of grpc_load.LoadResult.as_dict, for one caller."""
    lat_ms = np.asarray(times_s) * 1e3
    total_s = float(np.sum(times_s))
    return {
        "what": name,
        "rows_per_request": rows,
        "concurrency": 1,
        "duration_s": total_s,
        "requests": calls,
        "rows_per_s": calls * rows / total_s,
        "requests_per_s": calls / total_s,
        "latency_p50_ms": float(np.percentile(lat_ms, 50)),
        "latency_p99_ms": float(np.percentile(lat_ms, 99)),
        "latency_mean_ms": float(lat_ms.mean()),
    }


def _batches(X: NDArray[np.float32], rows: int) -> list[NDArray[np.float32]]:
    return [X[i : i + rows] for i in range(0, X.shape[0] - rows + 1, rows)]


def raw_ort(version_dir: Path, X: NDArray[np.float32], rows: int, threads: int,
            warmup_s: float, duration_s: float) -> dict:
    """(a) ONNX Runtime `run` in this process on the version's scorer.onnx, every output."""
    from latentwatch.service.ort_runtime import OrtRuntime

    runtime = OrtRuntime.open(version_dir / SCORER_FILE, intra_op_threads=threads)
    batches = _batches(X, rows)
    state = {"i": 0}

    def run_once() -> None:
        state["i"] += 1
        runtime.run({runtime.input_names[0]: batches[state["i"] % len(batches)]})

    calls, times_s = timed_loop(run_once, warmup_s, duration_s)
    result = in_process_row("onnxruntime run, all scorer outputs", rows, calls, times_s)
    return {**result, "provider": runtime.provider, "intra_op_threads": threads}


def pyod_vae(source: str, X: NDArray[np.float32], hidden: tuple[int, ...], latent_dim: int,
             rows: int, threads: int, quick: bool, warmup_s: float, duration_s: float
             ) -> Callable[[], dict]:
    """Fits PyOD's VAE now (same layer sizes); returns the measurement (e) to run later."""
    try:
        import torch
        from pyod.models.vae import VAE
    except ImportError as err:
        reason = f"pyod not installed ({err}); pip install -e '.[bench]'"
        return lambda: {"skipped": reason}
    from latentwatch.data import load_source

    torch.set_num_threads(threads)
    # Only its scoring speed is measured, so a small fit suffices.
    train = load_source(source, max_rows=500 if quick else 2000).X
    detector = VAE(
        encoder_neuron_list=list(hidden), decoder_neuron_list=list(reversed(hidden)),
        latent_dim=latent_dim, epoch_num=1, batch_size=rows, verbose=0, random_state=0,
    )
    fit_start_s = time.perf_counter()
    detector.fit(train)
    fit_s = time.perf_counter() - fit_start_s
    batches = _batches(X, rows)
    state = {"i": 0}

    def score_once() -> None:
        state["i"] += 1
        detector.decision_function(batches[state["i"] % len(batches)], batch_size=rows)

    def measure() -> dict:
        logger.info("measuring (e): pyod VAE in process")
        calls, times_s = timed_loop(score_once, warmup_s, duration_s)
        result = in_process_row("pyod VAE decision_function (random draw)", rows, calls,
                                times_s)
        return {**result, "fit_rows": int(train.shape[0]), "fit_s": fit_s,
                "torch_threads": threads, "deterministic": False}

    return measure
