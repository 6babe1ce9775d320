"""`latentwatch export`: a training run -> a new version in a model repository."""

from __future__ import annotations

import argparse

from latentwatch.export.exporter import export_run


def run(args: argparse.Namespace) -> None:
    optional = {} if args.select_statistics is None else {
        "select_statistics": args.select_statistics}
    if args.n_importance_samples is not None:
        optional["n_importance_samples"] = args.n_importance_samples
    if args.knn_reference_rows is not None:
        optional["n_reference_rows"] = args.knn_reference_rows
    version_dir = export_run(args.run_dir, args.repo, args.name, default_alpha=args.default_alpha,
                             **optional)
    print(f"exported {args.name} version {version_dir.name} to {version_dir}")
