"""`latentwatch bias-report`: a latent-density bias report of a data source, as JSON and/or HTML.

The data travels to a running server in chunks; the report comes back as one BiasReport. With
--groups, a CSV gives per-row group labels (every column but `id`) and optionally row ids (the
`id` column), one line per data row in data order.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.accumulator import BiasReport
from latentwatch.cli.connect import security_options
from latentwatch.client.client import LatentwatchClient
from latentwatch.client.frames import feature_names
from latentwatch.data import Dataset, column_order
from latentwatch.errors import DataError, InvalidInput
from latentwatch.reports.bias_html import Examples, RegionExamples, render_html, write_html
from latentwatch.reports.bias_json import ReportContext, report_to_dict, write_json
from latentwatch.reports.summary import summary
from latentwatch.repository.catalog import ModelInfo

logger = logging.getLogger(__name__)

ID_COLUMN = "id"
# Rows per region shown without decoded means; with them, as many as the server decoded.
MAX_SHOWN = 64
PROGRESS_EVERY_S = 2.0
READY_TIMEOUT_S = 30.0


def read_groups(
    path: Path, n_rows: int, *, cut: bool
) -> tuple[list[str] | None, dict[str, list[str]] | None]:
    """(ids, group columns) from a CSV with a header, one line per data row.

    With `cut` (the data was cut to its first n_rows rows), a longer file is cut the same way.
    """
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty; expected a header line, then one line per row")
            names = [name.strip() for name in header]
            if any(not name for name in names):
                raise DataError(f"{path}: the header has an empty column name: {header}")
            if len(set(names)) != len(names):
                raise DataError(f"{path}: the header repeats a column name: {names}")
            lines: list[list[str]] = []
            for cells in reader:
                if not cells:
                    continue  # a blank line, e.g. at the end of the file
                if len(cells) != len(names):
                    raise DataError(
                        f"{path}: line {reader.line_num} has {len(cells)} columns, "
                        f"the header {len(names)}"
                    )
                lines.append([cell.strip() for cell in cells])
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason})") from err
    if cut and len(lines) > n_rows:
        lines = lines[:n_rows]
    if len(lines) != n_rows:
        raise DataError(
            f"{path}: {len(lines)} rows, but the data has {n_rows}; give one line per data row, "
            "in data order"
        )
    columns = {name: [line[i] for line in lines] for i, name in enumerate(names)}
    ids = columns.pop(ID_COLUMN, None)
    if ids is not None:
        seen: set[str] = set()
        for i, row_id in enumerate(ids):
            if row_id in seen:
                raise DataError(f"{path}: id {row_id!r} (data row {i}) appears twice")
            seen.add(row_id)
    return ids, (columns or None)


def _progress_printer(n_rows: int) -> Callable[[int, int], None]:
    start_s = last_s = time.perf_counter()

    def report(done: int, total: int) -> None:
        nonlocal last_s
        now_s = time.perf_counter()
        if now_s - last_s >= PROGRESS_EVERY_S and done < total:
            last_s = now_s
            print(
                f"sent {done:,}/{total:,} rows ({100 * done / max(total, 1):.0f}%), "
                f"{done / (now_s - start_s):.0f} rows/s",
                file=sys.stderr, flush=True,
            )

    return report


def _region(
    positions: NDArray[np.int64], decoded: NDArray | None, inputs: NDArray[np.float64]
) -> RegionExamples:
    # The server decodes the first k' of the named rows: show the same ones (or a few inputs).
    k = min(decoded.shape[0] if decoded is not None else 8, inputs.shape[0])
    return RegionExamples(
        positions=positions[:k],
        inputs=inputs[:k],
        decoded=None if decoded is None else np.asarray(decoded, dtype=np.float64),
    )


def examples_for_display(report: BiasReport, dataset: Dataset, info: ModelInfo) -> Examples:
    """Inputs and decoded means of the densest and sparsest rows, in the data's units.

    The server sends the decoded means in the data's units already; images are drawn on the
    source's pixel scale (0 to its maximum, as training scales them).
    """
    # Only the shown rows are taken: the data may be large.
    sparsest = dataset.X[report.sparsest[:MAX_SHOWN]].astype(np.float64)  # (k, F) as given
    densest = dataset.X[report.densest[:MAX_SHOWN]].astype(np.float64)
    image_shape = tuple(info.image_shape) or None
    if image_shape is not None and int(np.prod(image_shape)) != dataset.n_features:
        image_shape = None
    return Examples(
        image_shape=image_shape,
        densest=_region(report.densest, report.decoded_densest, densest),
        sparsest=_region(report.sparsest, report.decoded_sparsest, sparsest),
        pixel_max=_pixel_max(dataset, report) if image_shape is not None else 1.0,
        feature_names=feature_names(info),
    )


def _pixel_max(dataset: Dataset, report: BiasReport) -> float:
    """The source's pixel maximum; for a source that does not know it (rows fed to an image
    model), the largest value shown, at least 1."""
    if dataset.max_value is not None:
        return float(dataset.max_value)
    shown = [dataset.X[report.sparsest[:MAX_SHOWN]], dataset.X[report.densest[:MAX_SHOWN]]]
    shown += [d for d in (report.decoded_sparsest, report.decoded_densest) if d is not None]
    return max([1.0] + [float(np.max(a)) for a in shown if a.size])


def run(args: argparse.Namespace) -> None:
    from latentwatch.data import load_source, load_with_ids

    if args.html is None and args.json is None:
        raise InvalidInput("nothing to write: give --html FILE, --json FILE, or both")
    data_ids = None
    if getattr(args, "id_column", None) is not None:
        dataset, data_ids = load_with_ids(args.data, args.id_column, max_rows=args.max_rows)
    else:
        dataset = load_source(args.data, max_rows=args.max_rows)
    ids, groups = None, None
    if args.groups is not None:
        ids, groups = read_groups(args.groups, dataset.n_rows, cut=args.max_rows is not None)
    ids = data_ids if data_ids is not None else ids
    # Options go to the server as given: it validates them (INVALID_ARGUMENT names the option).
    logger.info("read %d rows of %d features from %s", dataset.n_rows, dataset.n_features,
                args.data)
    with LatentwatchClient(args.server, **security_options(args)) as client:
        client.wait_ready(READY_TIMEOUT_S)
        info = client.get_model(args.model, args.version)
        # Named columns in the model's order (refused when they differ); unnamed stay as given.
        order = column_order(dataset.feature_names, feature_names(info), args.data)
        if order is not None:
            dataset = replace(dataset, X=np.ascontiguousarray(dataset.X[:, order]),
                              feature_names=tuple(feature_names(info) or ()))
        start_s = time.perf_counter()
        # Pinned to the version just described, in case a newer one loads meanwhile.
        report = client.bias_report(
            args.model, dataset.X, version=info.version, ids=ids, groups=groups,
            bins=args.bins, alpha=args.alpha, mode=args.mode, top_k=args.top_k,
            sparse_fraction=args.sparse_fraction, n_decoded=args.n_decoded,
            significance_level=args.significance_level, density=args.density,
            chunk_rows=args.chunk_rows, progress=_progress_printer(dataset.n_rows),
        )
        elapsed_s = time.perf_counter() - start_s
    context = ReportContext(model_name=info.name, model_version=info.version, source=args.data)
    density = f"{report.options.density} density, " if report.options.density else ""
    print(f"bias report of {report.n_rows:,} rows with {info.name} version {info.version} "
          f"in {elapsed_s:.2f} s ({density}{report.options.mode} weighting, "
          f"{report.options.bins} bins)")
    for sentence in summary(report):
        print(f"  {sentence}")
    if args.json is not None:
        write_json(args.json, report_to_dict(report, context))
        print(f"wrote {args.json}")
    if args.html is not None:
        write_html(args.html, render_html(report, context, examples_for_display(report, dataset,
                                                                                  info)))
        print(f"wrote {args.html}")
