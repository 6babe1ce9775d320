"""Scale curves (part of throughput.py): rows/s and p99 latency over a grid of rows per request
and concurrent callers, against one `latentwatch serve`.

Every point is a closed-loop run (grpc_load.run_load): `concurrency` callers, each sending its
next request when one returns, so rows x concurrency rows are in flight. Points with more than
`max_in_flight_rows` in flight (4,096 by default) are left out and listed as such: a caller's
request then waits for the whole queue (latency = rows in flight / rows/s, Little's law), so a
point takes minutes to complete a few requests on 2 cores and measures the queue, not the
service. The sweep's server gets its limits set explicitly so that no point is refused:
max_queue_rows = 2 x max_in_flight_rows (a request of more than half the queue enters window by
window, and with the default 8,192 queue rows 4 callers of 4,096 rows get RESOURCE_EXHAUSTED),
and max_concurrent_rpcs above the most callers (at its default of 256, 256 callers get
RESOURCE_EXHAUSTED now and then: a call still counts while its caller sends the next). Each
point is warmed up for one round of its rows in flight, then measured long enough for every
caller to complete about MIN_ROUNDS requests at the fastest rate measured so far.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from grpc_load import run_load
from numpy.typing import NDArray
from processes import CpuWatch, start_latentwatch

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.tensors import to_tensor

logger = logging.getLogger("throughput")

BATCH_SIZES = (1, 4, 16, 64, 256, 1024, 4096)
CONCURRENCIES = (1, 4, 16, 64, 256)
MAX_IN_FLIGHT_ROWS = 4096
SERVER_MAX_CONCURRENT_RPCS = 1024
# --quick: a small grid that still leaves a point out (64 x 16 > 512).
QUICK_BATCH_SIZES = (1, 16, 64)
QUICK_CONCURRENCIES = (1, 4, 16)
QUICK_MAX_IN_FLIGHT_ROWS = 512
MIN_ROUNDS = 2.0
# Distinct requests per point: enough to vary the rows, few enough to bound the client's memory.
PAYLOAD_ROWS = 16_384


@dataclass(frozen=True)
class Grid:
    batch_sizes: tuple[int, ...]
    concurrencies: tuple[int, ...]
    max_in_flight_rows: int = MAX_IN_FLIGHT_ROWS

    def points(self) -> list[tuple[int, int]]:
        return [(b, c) for b in self.batch_sizes for c in self.concurrencies
                if b * c <= self.max_in_flight_rows]

    def left_out(self) -> list[tuple[int, int]]:
        return [(b, c) for b in self.batch_sizes for c in self.concurrencies
                if b * c > self.max_in_flight_rows]


    @property
    def server_max_queue_rows(self) -> int:
        return 2 * max(self.max_in_flight_rows, max(self.batch_sizes))


def grid(quick: bool, max_in_flight_rows: int | None = None) -> Grid:
    if quick:
        return Grid(QUICK_BATCH_SIZES, QUICK_CONCURRENCIES,
                    max_in_flight_rows or QUICK_MAX_IN_FLIGHT_ROWS)
    return Grid(BATCH_SIZES, CONCURRENCIES, max_in_flight_rows or MAX_IN_FLIGHT_ROWS)


def _payloads(X: NDArray[np.float32], model: str, rows: int, score_kind: str) -> list[bytes]:
    count = max(1, min(16, PAYLOAD_ROWS // rows, X.shape[0] // rows))
    starts = [(i * rows) % (X.shape[0] - rows + 1) for i in range(count)]
    return [
        pb.ScoreRequest(model_name=model, input=to_tensor(X[s : s + rows]),
                        score_kind=score_kind).SerializeToString()
        for s in starts
    ]


def sweep(repo: Path, model: str, X: NDArray[np.float32], work: Path, threads: int,
          score_kind: str, the_grid: Grid, base_s: float, warmup_s: float,
          rows_per_s_guess: float) -> dict[str, Any]:
    """Measures every point of the grid on one server; rows_per_s_guess sizes the first windows
    (later ones use the fastest rate measured so far)."""
    assert max(the_grid.concurrencies) < SERVER_MAX_CONCURRENT_RPCS
    env = {"LATENTWATCH_MAX_QUEUE_ROWS": str(the_grid.server_max_queue_rows),
           "LATENTWATCH_MAX_CONCURRENT_RPCS": str(SERVER_MAX_CONCURRENT_RPCS)}
    server, target, _ = start_latentwatch(repo, work / "scale-server.log", threads,
                                          extra_env=env)
    points = []
    rate = rows_per_s_guess
    with server:
        for rows, concurrency in the_grid.points():
            in_flight = rows * concurrency
            duration_s = max(base_s, MIN_ROUNDS * in_flight / rate)
            point_warmup_s = max(warmup_s, in_flight / rate)
            logger.info("scale point: %d rows x %d callers, %.1f s", rows, concurrency,
                        duration_s)
            payloads = _payloads(X, model, rows, score_kind)
            with CpuWatch({"server": server.pid}) as cpu:
                result = run_load(target, payloads, rows_per_request=rows,
                                  concurrency=concurrency, warmup_s=point_warmup_s,
                                  duration_s=duration_s)
            rate = max(rate, result.rows_per_s)
            points.append({**result.as_dict(), "warmup_s": point_warmup_s, "cpu": cpu.figures})
        server.check_alive()
    return {
        "score_kind": score_kind,
        "batch_sizes": list(the_grid.batch_sizes),
        "concurrencies": list(the_grid.concurrencies),
        "max_in_flight_rows": the_grid.max_in_flight_rows,
        "server_max_queue_rows": the_grid.server_max_queue_rows,
        "server_max_concurrent_rpcs": SERVER_MAX_CONCURRENT_RPCS,
        "left_out": [{"rows_per_request": b, "concurrency": c,
                      "reason": f"{b * c} rows in flight > {the_grid.max_in_flight_rows}"}
                     for b, c in the_grid.left_out()],
        "points": points,
    }


def best_points(curves: dict[str, Any]) -> dict[str, Any]:
    """The point with the most rows/s, and the lowest p99 at each batch size."""
    points = curves["points"]
    best = max(points, key=lambda p: p["rows_per_s"])
    by_rows: dict[int, dict[str, Any]] = {}
    for p in points:
        seen = by_rows.get(p["rows_per_request"])
        if seen is None or p["latency_p99_ms"] < seen["latency_p99_ms"]:
            by_rows[p["rows_per_request"]] = p
    return {"most_rows_per_s": {k: best[k] for k in
                                ("rows_per_request", "concurrency", "rows_per_s",
                                 "latency_p99_ms")},
            "lowest_p99_ms_by_rows": {str(r): p["latency_p99_ms"]
                                      for r, p in sorted(by_rows.items())}}


def series(curves: dict[str, Any], key: str) -> dict[int, tuple[list[int], list[float]]]:
    """concurrency -> (batch sizes, values of `key`) for plotting."""
    out: dict[int, tuple[list[int], list[float]]] = {}
    for p in curves["points"]:
        xs, ys = out.setdefault(p["concurrency"], ([], []))
        xs.append(p["rows_per_request"])
        ys.append(p[key])
    return dict(sorted(out.items()))

