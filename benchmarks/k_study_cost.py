"""What an exported version costs to score, in-process (part of benchmarks/k_study.py).

For each version: rows/s of the scorer graph alone (ONNX Runtime, every output) and of the
default score kind through the offline scorer (graph plus second stage), on fixed 256-row
batches. The versions are measured interleaved in one process, in rounds whose order alternates,
so that a shared machine's drifting load falls on every version alike; each figure sums its
rounds. Rows are counted per wall second and per CPU second of this process (every thread): on
a machine other work keeps busy, the CPU figures are the steadier measure of what a row costs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from latentwatch.service.offline import OfflineScorer

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


Step = Callable[[NDArray[np.float32]], object]


def _timed(step: Step, batches: list[NDArray[np.float32]], min_s: float
           ) -> tuple[int, float, float]:
    """(rows, wall seconds, CPU seconds) of running `step` over the batches, cycling, for at
    least `min_s` wall seconds."""
    done, start_s, start_cpu_s = 0, time.perf_counter(), time.process_time()
    while True:
        step(batches[done % len(batches)])
        done += 1
        elapsed_s = time.perf_counter() - start_s
        if done >= MIN_BATCHES and elapsed_s >= min_s:
            return done * BATCH_ROWS, elapsed_s, time.process_time() - start_cpu_s


def _graph_step(scorer: OfflineScorer) -> Step:
    feed = scorer.manifest.input.name
    return lambda batch: scorer.runtime.run({feed: batch})


def _default_step(scorer: OfflineScorer) -> Step:
    kind = scorer.default_score_kind
    return lambda batch: scorer.score(batch, [kind])


def measure_costs(
    version_dirs: dict[str, Path], rows: NDArray[np.float32], threads: int,
    rounds: int = ROUNDS, min_s: float = MIN_MEASURE_S,
) -> dict[str, dict[str, Any]]:
    """Each version (key -> version directory) -> graph and default-kind rows/s and their
    ratio, measured interleaved over `rounds` rounds with `threads` ONNX Runtime threads."""
    batches = cost_batches(rows)
    steps: dict[tuple[str, str], Step] = {}
    kinds: dict[str, str] = {}
    for key, version_dir in version_dirs.items():
        scorer = OfflineScorer.from_version_dir(version_dir, intra_op_threads=threads)
        kinds[key] = scorer.default_score_kind
        steps[(key, "graph")] = _graph_step(scorer)
        steps[(key, "default")] = _default_step(scorer)
    for step in steps.values():  # warm-up: first runs allocate
        step(batches[0])
    totals = {name: np.zeros(3) for name in steps}  # rows, wall s, CPU s
    order = list(steps)
    for round_index in range(rounds):
        for name in order if round_index % 2 == 0 else order[::-1]:
            totals[name] += _timed(steps[name], batches, min_s)
    out: dict[str, dict[str, Any]] = {}
    for key in version_dirs:
        (g_rows, g_wall, g_cpu), (d_rows, d_wall, d_cpu) = (totals[(key, "graph")],
                                                             totals[(key, "default")])
        graph, default = g_rows / g_wall, d_rows / d_wall
        graph_cpu, default_cpu = g_rows / max(g_cpu, 1e-9), d_rows / max(d_cpu, 1e-9)
        out[key] = {"graph_rows_per_s": graph, "default_rows_per_s": default,
                    "default_over_graph": default / graph,
                    "graph_rows_per_cpu_s": graph_cpu, "default_rows_per_cpu_s": default_cpu,
                    "default_over_graph_cpu": default_cpu / graph_cpu,
                    "default_kind": kinds[key]}
    return out


def cost_protocol(threads: int, rounds: int, min_s: float) -> str:
    return (f"in-process, {BATCH_ROWS}-row batches of the test rows, ONNX Runtime with "
            f"{threads} intra-op thread(s); graph = the scorer graph's every output; default = "
            f"the default kind through the offline scorer (graph + second stage); every version "
            f"of a set and seed interleaved, {rounds} rounds in alternating order, each "
            f"measurement >= {min_s} s and >= {MIN_BATCHES} batches; rows/s = rows / seconds "
            f"summed over rounds; *_cpu_s: rows per CPU second of the process (all threads)")
