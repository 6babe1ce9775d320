"""What an exported version costs to score, in-process (part of benchmarks/k_study.py).

For each version: rows/s of the scorer graph alone (ONNX Runtime, every output) and of the
default score kind through the offline scorer (graph plus second stage), on fixed 256-row
batches. The versions are measured interleaved in one process, in rounds whose order alternates,
so that a shared machine's drifting load falls on every version alike; each figure sums its
rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

BATCH_ROWS = 256
MAX_BATCHES = 8  # distinct batches cycled through (at most 2048 rows)
ROUNDS = 3
MIN_MEASURE_S = 0.4  # each measurement of one round runs at least this long
MIN_BATCHES = 3  # ... and at least this many batches


def cost_batches(rows: NDArray[np.float32]) -> list[NDArray[np.float32]]:
    """Fixed (256, F) batches of `rows` (repeated when there are fewer than 256)."""
    n = min(len(rows), BATCH_ROWS * MAX_BATCHES)
    n = max(BATCH_ROWS, n - n % BATCH_ROWS)
    data = np.ascontiguousarray(np.resize(rows, (n, *rows.shape[1:])), dtype=np.float32)
    return [data[i : i + BATCH_ROWS] for i in range(0, n, BATCH_ROWS)]


def _timed(step: Callable[[NDArray[np.float32]], object], batches: list[NDArray[np.float32]],
           min_s: float) -> tuple[int, float]:
    """(rows, seconds) of running `step` over the batches, cycling, for at least `min_s`."""
    done, start_s = 0, time.perf_counter()
    while True:
        step(batches[done % len(batches)])
        done += 1
        elapsed_s = time.perf_counter() - start_s
        if done >= MIN_BATCHES and elapsed_s >= min_s:
            return done * BATCH_ROWS, elapsed_s


def measure_costs(
    version_dirs: dict[str, Path], rows: NDArray[np.float32], threads: int,
    rounds: int = ROUNDS, min_s: float = MIN_MEASURE_S,
) -> dict[str, dict[str, Any]]:
    """Each version (key -> version directory) -> graph and default-kind rows/s and their
    ratio, measured interleaved over `rounds` rounds with `threads` ONNX Runtime threads."""
    from latentwatch.service.offline import OfflineScorer

    batches = cost_batches(rows)
    steps: dict[tuple[str, str], Callable[[NDArray[np.float32]], object]] = {}
    kinds: dict[str, str] = {}
    for key, version_dir in version_dirs.items():
        scorer = OfflineScorer.from_version_dir(version_dir, intra_op_threads=threads)
        feed = scorer.manifest.input.name
        kinds[key] = scorer.default_score_kind
        steps[(key, "graph")] = (lambda b, s=scorer, f=feed: s.runtime.run({f: b}))
        steps[(key, "default")] = (lambda b, s=scorer, k=kinds[key]: s.score(b, [k]))
    for step in steps.values():  # warm-up: first runs allocate
        step(batches[0])
    totals = {name: [0, 0.0] for name in steps}
    order = list(steps)
    for round_index in range(rounds):
        for name in order if round_index % 2 == 0 else order[::-1]:
            n, seconds = _timed(steps[name], batches, min_s)
            totals[name][0] += n
            totals[name][1] += seconds
    out: dict[str, dict[str, Any]] = {}
    for key in version_dirs:
        graph = totals[(key, "graph")][0] / totals[(key, "graph")][1]
        default = totals[(key, "default")][0] / totals[(key, "default")][1]
        out[key] = {"graph_rows_per_s": graph, "default_rows_per_s": default,
                    "default_over_graph": default / graph, "default_kind": kinds[key]}
    return out


def cost_protocol(threads: int, rounds: int, min_s: float) -> str:
    return (f"in-process, {BATCH_ROWS}-row batches of the test rows, ONNX Runtime with "
            f"{threads} intra-op thread(s); graph = the scorer graph's every output; default = "
            f"the default kind through the offline scorer (graph + second stage); every version "
            f"of a set and seed interleaved, {rounds} rounds in alternating order, each "
            f"measurement >= {min_s} s and >= {MIN_BATCHES} batches; rows/s = rows / seconds "
            f"summed over rounds")
