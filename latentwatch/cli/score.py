"""`latentwatch score`: score a data source against a running server and write a CSV.

One CSV row per input row, in input order: `row`, `score`, every other score kind of the model,
`p_value`, `outlier_probability`, `is_outlier` and, with --fdr, `fdr_is_outlier`. With --fdr the
Benjamini-Hochberg decision covers every row of the file, not each chunk.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from latentwatch.client.client import LatentwatchClient, ScoreResult, benjamini_hochberg
from latentwatch.errors import InvalidInput

logger = logging.getLogger(__name__)

# A progress line at most this often, so small files print none and large ones a few.
PROGRESS_EVERY_S = 2.0
READY_TIMEOUT_S = 30.0


def _chunks(X: NDArray, batch_rows: int) -> Iterator[NDArray]:
    for start in range(0, X.shape[0], batch_rows):
        yield X[start : start + batch_rows]


def _stream_with_progress(
    client: LatentwatchClient, args: argparse.Namespace, X: NDArray
) -> ScoreResult:
    n_rows = X.shape[0]
    parts: list[ScoreResult] = []
    done_rows = 0
    start_s = last_report_s = time.perf_counter()
    stream = client.score_stream(
        args.model, _chunks(X, args.batch_rows), version=args.version, kinds=("*",),
        alpha=args.alpha, score_kind=args.score_kind,
    )
    for part in stream:
        parts.append(part)
        done_rows += len(part)
        now_s = time.perf_counter()
        if now_s - last_report_s >= PROGRESS_EVERY_S and done_rows < n_rows:
            last_report_s = now_s
            rate = done_rows / (now_s - start_s)
            print(
                f"scored {done_rows}/{n_rows} rows ({100 * done_rows / n_rows:.0f}%), "
                f"{rate:.0f} rows/s",
                file=sys.stderr,
                flush=True,
            )
    return ScoreResult.concat(parts)


def _columns(result: ScoreResult) -> dict[str, NDArray]:
    """CSV columns in order; the default kind is `score`, so it is not repeated."""
    columns: dict[str, NDArray] = {"row": np.arange(len(result)), "score": result.score}
    for kind, values in result.scores.items():
        if kind != result.score_kind:
            columns[kind] = values
    columns["p_value"] = result.p_value
    columns["outlier_probability"] = result.outlier_probability
    columns["is_outlier"] = result.is_outlier
    if result.fdr is not None:
        columns["fdr_is_outlier"] = result.fdr.is_outlier
    return columns


def _format(values: NDArray) -> list[str]:
    if values.dtype == np.bool_:
        return ["1" if v else "0" for v in values.tolist()]
    if values.dtype.kind in "iu":
        return [str(v) for v in values.tolist()]
    # repr of a Python float round-trips exactly.
    return [repr(v) for v in values.tolist()]


def write_csv(path: Path, result: ScoreResult) -> list[str]:
    """Writes one line per row; returns the header."""
    columns = _columns(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(zip(*(_format(v) for v in columns.values()), strict=True))
    return list(columns)


def _summary(result: ScoreResult, elapsed_s: float, out: Path) -> str:
    n = len(result)
    flagged = int(result.is_outlier.sum())
    q = np.quantile(result.score, [0.0, 0.5, 0.9, 0.99, 1.0])
    lines = [
        f"scored {n} rows with {result.model_name} version {result.model_version} "
        f"in {elapsed_s:.2f} s ({n / max(elapsed_s, 1e-9):.0f} rows/s)",
        f"score kind {result.score_kind}: min {q[0]:.4g}  p50 {q[1]:.4g}  p90 {q[2]:.4g}  "
        f"p99 {q[3]:.4g}  max {q[4]:.4g}",
        f"alpha {result.alpha:g}: {flagged} flagged ({100 * flagged / n:.2f}%)",
    ]
    if result.fdr is not None:
        lines.append(
            f"fdr {result.fdr.level:g} (Benjamini-Hochberg over all rows): "
            f"{result.fdr.n_flagged} flagged ({100 * result.fdr.n_flagged / n:.2f}%)"
        )
    lines.append(f"wrote {out}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    from latentwatch.data import load_source

    if args.batch_rows < 1:
        raise InvalidInput(f"--batch-rows must be at least 1, got {args.batch_rows}")
    if args.fdr is not None:
        # Checked before the data travels, rather than after.
        benjamini_hochberg(np.zeros(0), args.fdr)
    dataset = load_source(args.data)
    X = dataset.X
    if X.shape[0] == 0:
        raise InvalidInput(f"{args.data}: no rows to score")
    logger.info("read %d rows of %d features from %s", X.shape[0], X.shape[1], args.data)
    with LatentwatchClient(args.server) as client:
        client.wait_ready(READY_TIMEOUT_S)
        start_s = time.perf_counter()
        result = _stream_with_progress(client, args, X)
        elapsed_s = time.perf_counter() - start_s
    if args.fdr is not None:
        result = replace(result, fdr=benjamini_hochberg(result.p_value, args.fdr))
    write_csv(args.out, result)
    print(_summary(result, elapsed_s, args.out))
