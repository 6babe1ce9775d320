"""`latentwatch bootstrap`: train and export the default models into an empty repository."""

from __future__ import annotations

import argparse

from latentwatch.export.bootstrap import ensure_default_models


def run(args: argparse.Namespace) -> None:
    ensure_default_models(args.repo, args.models, max_epochs=args.max_epochs,
                          runs_dir=args.runs_dir)
