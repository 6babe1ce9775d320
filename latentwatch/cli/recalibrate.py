"""`latentwatch recalibrate`: new normal rows -> a new version with a new calibration.

Torch-free: it reads the data (latentwatch.data) and scores it with ONNX Runtime, so a serving
install can recalibrate. The server serves the new version after a restart.
"""

from __future__ import annotations

import argparse
import logging

from latentwatch.data import load_source
from latentwatch.export.recalibrate import recalibrate

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> None:
    dataset = load_source(args.data, max_rows=args.max_rows)
    logger.info("read %d rows of %d features from %s", dataset.n_rows, dataset.n_features,
                dataset.source)
    done = recalibrate(
        args.repo, args.model, dataset.X, source=args.data, version=args.version,
        default_alpha=args.default_alpha, feature_names=dataset.feature_names,
    )
    print(
        f"recalibrated {args.model} version {done.from_version} on {done.n_rows} rows as "
        f"version {done.version_dir.name}: {done.version_dir} (served after a server restart)"
    )
