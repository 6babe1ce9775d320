"""`latentwatch generate`: samples from a served model as a labelled PNG grid (and .npy).

A class-conditional model without --label gets one grid row per class (labelled with the class
index; the names are printed). With --from-bias-report the samples are drawn around the latent
means of the report's sparsest rows (carried in the report; a report from before they were,
needs --data, the rows it was made of, encoded again): one grid row per row of the report,
labelled R<position>, so a team sees, and can add to its data, what the data covers thinly.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from latentwatch.cli.connect import security_options
from latentwatch.cli.image_grid import as_grid, grid_png
from latentwatch.client.client import LatentwatchClient
from latentwatch.errors import DataError, InvalidInput
from latentwatch.repository.catalog import ModelInfo

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0


def generation_facts(info: ModelInfo) -> dict[str, Any]:
    """The manifest's generation section (n_classes, class_names, output_range, ...); {} for
    models that generate from a decoder."""
    try:
        section = json.loads(info.manifest_json).get("generation")
    except (ValueError, AttributeError):
        return {}
    return section if isinstance(section, dict) else {}


def value_range(facts: dict[str, Any]) -> tuple[float, float] | None:
    bounds = facts.get("output_range")
    return (float(bounds[0]), float(bounds[1])) if bounds else None


def read_report(path: Path) -> dict[str, Any]:
    """A bias report JSON (`latentwatch bias-report --json`): its model and sparsest rows."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        model = report["model"]
        positions = [int(entry["position"]) for entry in report["sparsest"]]
        # Reports carry each sparsest row's encoder mean; older ones need the rows (--data).
        latent = [entry.get("latent_mu") for entry in report["sparsest"]]
        means = (np.asarray(latent, dtype=np.float32)
                 if latent and all(isinstance(mu, list) for mu in latent) else None)
        return {"name": str(model["name"]), "version": str(model.get("version", "")),
                "positions": positions, "latent_mu": means}
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from err
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a bias report JSON with model and sparsest rows "
                        f"({type(err).__name__}: {err})") from err


def report_centers(client: LatentwatchClient, report: dict[str, Any], data: str | None,
                   k: int) -> tuple[NDArray[np.float32], list[int]]:
    """(k, Z) latent means of the report's k sparsest rows, and their positions: from the
    report, or with `data` (the rows the report was made of) encoded again."""
    from latentwatch.data import load_source

    positions = report["positions"][:k]
    if not positions:
        raise InvalidInput("--from-bias-report: the report names no sparsest rows")
    if data is None and report["latent_mu"] is not None:
        return report["latent_mu"][:k], positions
    if data is None:
        raise InvalidInput("--from-bias-report: this report carries no latent means (made by "
                           "an older latentwatch); give --data, the data the report was made "
                           "of, whose sparsest rows are encoded again")
    dataset = load_source(data, max_rows=max(positions) + 1)
    if max(positions) >= dataset.n_rows:
        raise DataError(f"{data}: {dataset.n_rows} rows, but the report names row "
                        f"{max(positions)}; give the data the report was made of")
    mu, _ = client.encode(report["name"], dataset.X[positions], version=report["version"])
    return mu, positions


def rows_by(samples: NDArray, rows: NDArray, n_rows: int) -> NDArray[np.float64]:
    """(n, ...) samples, sample i in grid row rows[i] -> (n_rows, K, ...), in sample order
    within each row; unused places NaN."""
    counts = np.bincount(rows, minlength=n_rows)
    grid = np.full((n_rows, max(1, int(counts.max())), *samples.shape[1:]), np.nan)
    filled = np.zeros(n_rows, dtype=np.int64)
    for sample, row in zip(samples, rows.tolist(), strict=True):
        grid[row, filled[row]] = sample
        filled[row] += 1
    return grid


def run(args: argparse.Namespace) -> None:
    report = read_report(args.from_bias_report) if args.from_bias_report else None
    model = args.model or (report["name"] if report else None)
    if model is None:
        raise InvalidInput("--model: name the model to sample (or give --from-bias-report)")
    if report is not None and model != report["name"]:
        raise InvalidInput(f"--from-bias-report: the report is of model {report['name']!r}; its "
                           f"latent means mean nothing to {model!r}")
    version = args.version or (report["version"] if report else "")
    with LatentwatchClient(args.server, timeout_s=args.timeout, **security_options(args)) as client:
        client.wait_ready(READY_TIMEOUT_S)
        facts = generation_facts(client.get_model(model, version))
        n_classes = facts.get("n_classes")
        centers: NDArray[np.float32] | None = None
        positions: list[int] = []
        if report is not None:
            centers, positions = report_centers(client, report, args.data, args.centers)
        labels: list[int] = []
        n_cols = args.columns or math.ceil(math.sqrt(args.n))
        if args.label is not None:
            labels = [args.label]
        elif n_classes and centers is None:  # an even share of the samples per class
            labels = [i * n_classes // args.n for i in range(args.n)]
        result = client.generate(model, args.n, version=version, seed=args.seed, labels=labels,
                                 truncation=args.truncation, centers=centers, spread=args.spread)
    samples = result.samples
    row_labels: list[str] = []
    if centers is not None:
        tiles = rows_by(samples, np.arange(len(samples)) % len(positions), len(positions))
        row_labels = [f"R{p}" for p in positions]
    elif n_classes and args.label is None and result.labels is not None:
        tiles = rows_by(samples, result.labels, n_classes)
        row_labels = [str(k) for k in range(n_classes)]
    else:
        tiles = as_grid(samples, n_cols)
    args.png.write_bytes(grid_png(tiles, row_labels, value_range=value_range(facts)))
    if args.npy is not None:
        np.save(args.npy, samples, allow_pickle=False)
    print(f"{result.samples.shape[0]} samples of {result.model_name} version "
          f"{result.model_version}, seed {result.seed}: {args.png}"
          + (f", {args.npy}" if args.npy is not None else ""))
    if n_classes and args.label is None and centers is None:
        names = result.class_names or tuple(str(k) for k in range(n_classes))
        print("rows: " + ", ".join(f"{k} = {name}" for k, name in enumerate(names)))
    if centers is not None:
        print(f"rows: around the latent means of the report's {len(positions)} sparsest rows "
              f"(R<position>), spread {args.spread if args.spread is not None else 'default'}")
