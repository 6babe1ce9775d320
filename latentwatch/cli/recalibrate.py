"""`latentwatch recalibrate`: new normal rows -> a new version with a new calibration.

Torch-free: it reads the data (latentwatch.data) and scores it with ONNX Runtime, so a serving
install can recalibrate. The server serves the new version after a restart. With
--group-column, the table's column of that name is each row's group (not a feature).
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from latentwatch.data import load_source, open_table
from latentwatch.export.recalibrate import recalibrate

logger = logging.getLogger(__name__)

CHUNK_ROWS = 65536


def run(args: argparse.Namespace) -> None:
    groups: list[str] | None = None
    if args.group_column is None:
        dataset = load_source(args.data, max_rows=args.max_rows)
        X, names, source = dataset.X, dataset.feature_names, dataset.source
    else:  # the group column travels as the table's row labels
        table = open_table(args.data, id_column=args.group_column)
        parts, groups = [], []
        for chunk in table.chunks(CHUNK_ROWS):
            parts.append(chunk.X)
            groups.extend(chunk.ids or [])
            if args.max_rows is not None and len(groups) >= args.max_rows:
                break
        width = len(table.names) if table.names is not None else 0
        X = np.concatenate(parts)[: args.max_rows] if parts else np.zeros((0, width), np.float32)
        groups = groups[: args.max_rows]
        names, source = table.names, table.source
    logger.info("read %d rows of %d features from %s", X.shape[0], X.shape[1], source)
    done = recalibrate(
        args.repo, args.model, X, source=args.data, version=args.version,
        default_alpha=args.default_alpha, feature_names=names, groups=groups,
        group_column=args.group_column or "",
    )
    grouped = f" in {len(set(groups))} groups of {args.group_column}" if groups else ""
    print(
        f"recalibrated {args.model} version {done.from_version} on {done.n_rows} rows{grouped} "
        f"as version {done.version_dir.name}: {done.version_dir} (served after a server restart)"
    )
