"""`latentwatch traverse`: a latent sweep of a served model as a labelled PNG grid (and .npy).

One grid row per swept dimension (D<index>), one column per value it takes; the printed table
gives how much each dimension changes the output and names the inactive ones.
"""

from __future__ import annotations

import argparse

import numpy as np

from latentwatch.cli.connect import security_options
from latentwatch.cli.generate import READY_TIMEOUT_S, generation_facts, value_range
from latentwatch.cli.image_grid import grid_png, number_label
from latentwatch.client.client import LatentwatchClient
from latentwatch.errors import DataError, InvalidInput


def _numbers(text: str | None, cast: type, what: str) -> list:
    if not text:
        return []
    try:
        return [cast(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidInput(f"{what}: expected comma-separated numbers, got {text!r}") from None


def run(args: argparse.Namespace) -> None:
    if args.data is not None and args.latent is not None:
        raise InvalidInput("give --data (a row, encoded) or --latent (a point), not both")
    row = None
    if args.data is not None:
        from latentwatch.data import load_source

        dataset = load_source(args.data, max_rows=args.row + 1)
        if args.row >= dataset.n_rows:
            raise DataError(f"{args.data}: {dataset.n_rows} rows; --row {args.row} is past them")
        row = dataset.X[args.row : args.row + 1]
    latent = np.asarray(_numbers(args.latent, float, "--latent")) if args.latent else None
    dimensions = _numbers(args.dimensions, int, "--dimensions")
    with LatentwatchClient(args.server, timeout_s=args.timeout, **security_options(args)) as client:
        client.wait_ready(READY_TIMEOUT_S)
        facts = generation_facts(client.get_model(args.model, args.version))
        result = client.traverse(args.model, version=args.version, row=row, latent=latent,
                                 dimensions=dimensions, low=args.low, high=args.high,
                                 steps=args.steps, label=args.label)
    png = grid_png(result.samples, [f"D{d}" for d in result.dimensions],
                   [number_label(v) for v in result.values.tolist()], value_range(facts))
    args.png.write_bytes(png)
    if args.npy is not None:
        np.save(args.npy, result.samples, allow_pickle=False)
    print(f"traversal of {result.model_name} version {result.model_version}: "
          f"{len(result.dimensions)} dimensions x {result.values.shape[0]} steps: {args.png}")
    print("dimension  change")
    for d, change in zip(result.dimensions, result.change.tolist(), strict=True):
        flag = "  inactive" if d in result.inactive_dimensions else ""
        print(f"{d:>9}  {change:.4f}{flag}")
    inactive = ", ".join(map(str, result.inactive_dimensions)) or "none"
    print(f"inactive (change < {result.inactive_threshold:.3g}): {inactive}")
