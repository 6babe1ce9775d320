"""`latentwatch score`: score a data source against a running server and write a CSV.

One CSV row per input row, in input order: `row` (or `id`, with --id-column), `score`, every
other score kind of the model, `p_value`, `outlier_probability`, `is_outlier` and, with --fdr,
`fdr_is_outlier`. With --group-column, that column is each row's group (not a feature) and the
p-values are against the group's calibration rows. The file is read in chunks
(latentwatch.data.open_table) and streamed with flow control and retries
(latentwatch.client.streaming); rows are written as their scores arrive, so memory does not
grow with the file. With --fdr the Benjamini-Hochberg decision covers every row of the file:
each distinct p-value is counted as it arrives (a conformal p-value takes at most calibration
size + 1 values, latentwatch.scoring.conformal.PValueTally), the exact threshold comes from
those counts, and a second pass over the written CSV adds the column. The summary's score
quantiles are exact up to a million rows and from a strided sample of about a million
beyond.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np
from numpy.typing import NDArray

from latentwatch.cli.anomaly_maps import anomaly_maps
from latentwatch.cli.connect import security_options
from latentwatch.client.client import LatentwatchClient, ScoreResult, benjamini_hochberg
from latentwatch.client.frames import feature_names
from latentwatch.client.retry import RetryPolicy
from latentwatch.client.streaming import StreamPolicy
from latentwatch.data import Table, column_order, open_table
from latentwatch.errors import DataError, InvalidInput
from latentwatch.scoring.conformal import PValueTally

logger = logging.getLogger(__name__)

# A progress line at most this often, so small files print none and large ones a few.
PROGRESS_EVERY_S = 2.0
# Rows sent and not yet answered (at least one batch): a few batches keep the server busy
# while staying well under its queue limit (8192 rows by default).
IN_FLIGHT_ROWS = 4096
# Models load and warm up after the port answers; --timeout bounds the connection itself.
READY_TIMEOUT_S = 30.0
# Scores kept for the summary's quantiles: a strided sample past this, so memory stays flat.
SAMPLE_ROWS = 1 << 20


def _columns(result: ScoreResult, first: tuple[str, NDArray], top_k: int) -> dict[str, NDArray]:
    """CSV columns in order; the default kind is `score`, so it is not repeated; with
    explanations, `top<r>_feature` (name, else index) and `top<r>_contribution` for r <= top_k."""
    columns: dict[str, NDArray] = {first[0]: first[1], "score": result.score}
    for kind, values in result.scores.items():
        if kind != result.score_kind:
            columns[kind] = values
    columns["p_value"] = result.p_value
    columns["outlier_probability"] = result.outlier_probability
    columns["is_outlier"] = result.is_outlier
    explained = result.explanations
    for r in range(min(top_k, 0 if explained is None else explained.features.shape[1])):
        assert explained is not None
        columns[f"top{r + 1}_feature"] = np.array(
            [names[r] or str(f) for names, f in zip(explained.names,
                                                   explained.features[:, r].tolist(),
                                                   strict=True)], dtype=object)
        columns[f"top{r + 1}_contribution"] = explained.contributions[:, r]
    return columns


def _format(values: NDArray) -> list[str]:
    if values.dtype == np.bool_:
        return ["1" if v else "0" for v in values.tolist()]
    if values.dtype.kind in "iuUO":
        return [str(v) for v in values.tolist()]
    # repr of a Python float round-trips exactly.
    return [repr(v) for v in values.tolist()]


class _Summary:
    """What the last lines print: a strided sample of at most SAMPLE_ROWS scores for the
    quantiles (exact below that); with --fdr, every p-value is counted for the decision."""

    def __init__(self, p_values: PValueTally | None) -> None:
        self._p_values = p_values
        self.first: ScoreResult | None = None
        self.n_rows = self.n_flagged = 0
        self._sample: list[NDArray[np.float64]] = []
        self._sampled = 0
        self._stride = 1

    def add(self, part: ScoreResult) -> None:
        self.first = self.first or part
        offset = (-self.n_rows) % self._stride  # the first row of this part on the stride
        kept = part.score[offset :: self._stride]
        self._sample.append(kept)
        self._sampled += len(kept)
        if self._sampled > SAMPLE_ROWS:
            merged = np.concatenate(self._sample)[::2]
            self._sample, self._sampled, self._stride = [merged], len(merged), 2 * self._stride
        if self._p_values is not None:
            self._p_values.add(part.p_value)
        self.n_rows += len(part)
        self.n_flagged += int(part.is_outlier.sum())

    def score_sample(self) -> NDArray[np.float64]:
        return np.concatenate(self._sample)


def _chunks(table: Table, args: argparse.Namespace, order: NDArray | None,
            ids: deque[tuple[list[str] | None, NDArray]]) -> Iterator[NDArray]:
    first_row = 0
    for chunk in table.chunks(args.batch_rows):
        bad = ~np.isfinite(chunk.X).all(axis=1)
        if bad.any():
            raise DataError(f"{args.data}: row {first_row + int(np.flatnonzero(bad)[0])} has "
                            "NaN/Inf values")
        first_row += len(chunk.X)
        rows = chunk.X if order is None else np.ascontiguousarray(chunk.X[:, order])
        ids.append((chunk.ids, rows))
        yield rows


def _score_to(partial: TextIO, p_values: PValueTally | None, client: LatentwatchClient,
              args: argparse.Namespace, table: Table, groups: Table | None
              ) -> tuple[_Summary, float]:
    info = client.get_model(args.model, args.version)
    order = column_order(table.names, feature_names(info), args.data)
    maps = anomaly_maps(args.anomaly_maps, info)
    # Anomaly maps need every pixel's contribution; the table shows the first --explain-top-k.
    top_k = args.explain_top_k if args.explain else 0
    explain_k = math.prod(info.image_shape) if maps is not None else top_k
    ids: deque[tuple[list[str] | None, NDArray]] = deque()
    writer = csv.writer(partial)
    summary = _Summary(p_values)
    done_rows = 0
    start_s = last_report_s = time.perf_counter()
    stream = client.score_stream(
        args.model, _chunks(table, args, order, ids), version=args.version, kinds=("*",),
        alpha=args.alpha, score_kind=args.score_kind, explain=explain_k > 0,
        explain_top_k=explain_k,
        groups=None if groups is None else (c.ids or [] for c in groups.chunks(args.batch_rows)),
    )
    for part in stream:
        chunk_ids, rows = ids.popleft()
        if maps is not None and part.explanations is not None:
            maps.write(done_rows, rows, part.explanations)
        first = ("row", np.arange(done_rows, done_rows + len(part)))
        if chunk_ids is not None:
            first = ("id", np.array(chunk_ids, dtype=object))
        columns = _columns(part, first, top_k)
        if summary.first is None:
            writer.writerow([*columns, *(["fdr_is_outlier"] if args.fdr is not None else [])])
        writer.writerows(zip(*(_format(v) for v in columns.values()), strict=True))
        summary.add(part)
        done_rows += len(part)
        now_s = time.perf_counter()
        if now_s - last_report_s >= PROGRESS_EVERY_S and done_rows != table.n_rows:
            last_report_s = now_s
            rate = done_rows / (now_s - start_s)
            of = f"/{table.n_rows} rows ({100 * done_rows / table.n_rows:.0f}%)" if (
                table.n_rows) else " rows"
            print(f"scored {done_rows}{of}, {rate:.0f} rows/s", file=sys.stderr, flush=True)
    if maps is not None:
        print(f"wrote {maps.written} anomaly maps to {maps.directory}")
    return summary, time.perf_counter() - start_s


def _add_fdr_column(partial: Path, out: Path, threshold: float | None) -> int:
    """Second pass: each row's decision (its written p-value <= the threshold) appended to its
    line; repr round-trips, so the decision is exact. Returns the rows flagged."""
    flagged = 0
    with partial.open(newline="") as source, out.open("w", newline="") as target:
        header = source.readline()
        target.write(header)  # it already names the column
        column = next(csv.reader([header])).index("p_value")
        for line in source:
            # csv.writer quotes every cell holding a comma, so unquoted lines split plainly.
            cells = next(csv.reader([line])) if '"' in line else line.split(",")
            flag = threshold is not None and float(cells[column]) <= threshold
            flagged += flag
            target.write(f"{line.rstrip(chr(13) + chr(10))},{1 if flag else 0}\r\n")
    return flagged


def _summary(summary: _Summary, fdr: tuple[float, int] | None, elapsed_s: float,
             out: Path) -> str:
    result = summary.first
    assert result is not None
    n = summary.n_rows
    q = np.quantile(summary.score_sample(), [0.0, 0.5, 0.9, 0.99, 1.0])
    lines = [
        f"scored {n} rows with {result.model_name} version {result.model_version} "
        f"in {elapsed_s:.2f} s ({n / max(elapsed_s, 1e-9):.0f} rows/s)",
        f"score kind {result.score_kind}: min {q[0]:.4g}  p50 {q[1]:.4g}  p90 {q[2]:.4g}  "
        f"p99 {q[3]:.4g}  max {q[4]:.4g}",
        f"alpha {result.alpha:g}: {summary.n_flagged} flagged "
        f"({100 * summary.n_flagged / n:.2f}%)",
    ]
    if fdr is not None:
        lines.append(
            f"fdr {fdr[0]:g} (Benjamini-Hochberg over all rows): {fdr[1]} flagged "
            f"({100 * fdr[1] / n:.2f}%)"
        )
    lines.append(f"wrote {out}")
    return "\n".join(lines)


def _selected(columns: str | None) -> list[str] | None:
    if columns is None:
        return None
    names = [c.strip() for c in columns.split(",") if c.strip()]
    if not names:
        raise InvalidInput("--columns: no column named")
    return names


def _tables(args: argparse.Namespace) -> tuple[Table, Table | None]:
    """The feature table and, with --group-column, a table whose row labels are the groups
    (read in step with the features, chunk for chunk)."""
    columns = _selected(args.columns)
    if args.group_column is None:
        return open_table(args.data, delimiter=args.delimiter, columns=columns,
                          id_column=args.id_column), None
    # Opened once without columns: its features are every column but the group column.
    everything = open_table(args.data, delimiter=args.delimiter, id_column=args.group_column)
    if everything.names is None:
        raise DataError(f"{args.data}: --group-column needs a header naming the columns")
    if columns is None:
        columns = [n for n in everything.names if n != args.id_column]
    if args.group_column in columns or args.group_column == args.id_column:
        raise DataError(f"{args.data}: the group column {args.group_column!r} cannot also be a "
                        "feature or the id column")
    table = open_table(args.data, delimiter=args.delimiter, columns=columns,
                       id_column=args.id_column)
    groups = open_table(args.data, delimiter=args.delimiter, columns=columns[:1],
                        id_column=args.group_column)
    return table, groups


def run(args: argparse.Namespace) -> None:
    if args.batch_rows < 1:
        raise InvalidInput(f"--batch-rows must be at least 1, got {args.batch_rows}")
    if args.timeout <= 0:
        raise InvalidInput(f"--timeout must be positive, got {args.timeout}")
    if args.fdr is not None:
        # Checked before the data travels, rather than after.
        benjamini_hochberg(np.zeros(0), args.fdr)
    table, groups = _tables(args)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    tally = PValueTally() if args.fdr is not None else None
    if args.backoff_max < args.backoff_initial:
        raise InvalidInput(f"--backoff-max {args.backoff_max:g} is below --backoff-initial "
                           f"{args.backoff_initial:g}")
    retry = RetryPolicy(max_attempts=args.retries, backoff_initial_s=args.backoff_initial,
                        backoff_max_s=args.backoff_max)
    policy = StreamPolicy(**vars(retry), max_in_flight_rows=max(args.batch_rows, IN_FLIGHT_ROWS))
    try:
        with LatentwatchClient(args.server, timeout_s=args.timeout, retry=retry,
                               stream_policy=policy, **security_options(args)) as client:
            client.connect()
            client.wait_ready(max(args.timeout, READY_TIMEOUT_S))
            with partial.open("w", newline="") as f:
                summary, elapsed_s = _score_to(f, tally, client, args, table, groups)
        if summary.first is None:
            raise InvalidInput(f"{args.data}: no rows to score")
        fdr = None
        if tally is not None and args.fdr is not None:
            threshold = tally.threshold(args.fdr)
            fdr = (args.fdr, _add_fdr_column(partial, out, threshold))
            partial.unlink()
        else:
            partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    print(_summary(summary, fdr, elapsed_s, out))
