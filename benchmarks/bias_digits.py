"""Does a bias report find a digit kept at 3% of the rows? Digits, one VAE per rare digit.

    python benchmarks/bias_digits.py [--seeds 0,1,2,3,4] [--densities knn,histogram]
        [--share 0.03] [--epochs N] [--knn-fractions 0.002,0.01] [--json out.json]
        [--mixture-components 5] [--mixture-restarts 5] [--timing-rows 2000000]

For every seed and every digit d (0..9): digit d's rows of scikit-learn's digits are subsampled
(seeded) so that they are `--share` (3%) of the rows; a VAE trains on that set with the project's
training code (latentwatch.models.training, the digits image defaults, the same seed); the trained
encoder's means of every row of the set go into the report's own accumulator
(latentwatch.bias.accumulator) with the digit as the group column, once per density
(BiasOptions.density), every other option at its default. The digit is found when the report
flags it with a representation ratio above 1. The balanced data (every digit, no subsampling)
trains once per seed: which digits are flagged there, and in which direction.

Enrichment, per rare digit, seed and density: the rare digit's share among the 5% of rows with
the lowest density over its share of all rows (benchmarks/bias_enrichment.py). Beside the
report's densities: the naive baselines, a k-NN density of the pixels with k at 0.5% and at 5%
of the rows (pixel_knn@...); a k-NN density of the means with k at 0.5% (knn@0.5%, the report's
KNN_FRACTION; results/bias-digits.json ran while it was 5%, so its "knn" is k at 5%); and a
Gaussian mixture of the means (benchmarks/latent_mixture.py): `mixture` averages the log
densities of --mixture-restarts fits from seeds 0.., `mixture-b` of as many fits from the next
seeds (the same estimate with other starts: how stable it is), and mixture@fit0..2 are single
fits (how unstable one fit is).

--knn-fractions adds k-NN densities whose k is another share of the rows than the report's
(KNN_FRACTION), named like knn@1%; their sparse sets go through the same group tests
(latentwatch.bias.groups) outside the accumulator.

--timing-rows N also times each density step of a report on N synthetic 16-wide means (the
accumulator's finish, without the group tests): the cost of a large report.

Prints the tables; --json writes every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bias_enrichment import BASELINE_FRACTIONS, enrichment, pixel_knn_log_density
from latent_mixture import mixture_log_density
from numpy.typing import NDArray

from latentwatch.bias.accumulator import BiasAccumulator
from latentwatch.bias.density import (
    KNN_FRACTION,
    knn_log_density,
    latent_histograms,
    log_density_and_weight,
)
from latentwatch.bias.groups import GroupCounts, group_stats
from latentwatch.bias.options import DENSITIES, BiasOptions

logger = logging.getLogger("bias_digits")

N_DIGITS = 10
TIMING_LATENT_DIM = 16


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (0)")
    parser.add_argument("--densities", default=",".join(DENSITIES),
                        help=f"comma-separated report densities ({','.join(DENSITIES)})")
    parser.add_argument("--share", type=float, default=0.03,
                        help="the rare digit's share of the rows (0.03)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: the digits image default)")
    parser.add_argument("--knn-fractions", default="",
                        help="comma-separated shares of the rows for extra k-NN densities")
    parser.add_argument("--mixture-components", type=int, default=5,
                        help="components of the Gaussian mixture of the means (5)")
    parser.add_argument("--mixture-restarts", type=int, default=5,
                        help="fits the mixture's log density is averaged over (5)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--timing-rows", type=int, default=0,
                        help="also time each density step on this many synthetic means")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.densities = args.densities.split(",")
    for density in args.densities:
        BiasOptions(density=density).validated()
    args.knn_fractions = [float(f) for f in args.knn_fractions.split(",") if f]
    args.variants = [*args.densities, *(f"knn@{f:.1%}" for f in args.knn_fractions)]
    if not 0 < args.share < 0.1:
        parser.error("--share: expected a share below a tenth (a rare digit)")
    return args


def load_digits() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    from latentwatch.data import load_source

    data = load_source("digits")
    assert data.y is not None
    return data.X, data.y


def kept_rows(y: NDArray[np.int64], rare: int | None, share: float, seed: int) -> NDArray:
    """Every row of the other digits and a seeded sample of the rare digit's, `share` of all;
    every row when `rare` is None."""
    if rare is None:
        return np.arange(len(y))
    others = np.flatnonzero(y != rare)
    n_rare = int(round(share / (1.0 - share) * len(others)))
    rng = np.random.default_rng([seed, rare])
    sample = rng.choice(np.flatnonzero(y == rare), n_rare, replace=False)
    return np.sort(np.concatenate([others, sample]))


def train_and_encode(
    X: NDArray[np.float32], work: Path, seed: int, epochs: int | None
) -> tuple[NDArray[np.float64], float]:
    """Trains a VAE on the rows (8x8 images with values 0..16) and returns their encoder means."""
    import torch

    from latentwatch.models import load_checkpoint, preprocess
    from latentwatch.models.dbvae import encoder_means
    from latentwatch.models.training import TrainConfig, run_training

    data_file = work / "data.npz"
    # Images in [0, 1]: the same scaling the digits source gets from its maximum of 16.
    np.savez(data_file, X=(X / 16.0).reshape(-1, 8, 8).astype(np.float32))
    start_s = time.perf_counter()
    options: dict[str, Any] = {"seed": seed, "progress": False}
    if epochs is not None:
        options["epochs"] = epochs
    run_training(TrainConfig(data=str(data_file), model="vae", out=work / "run", **options))
    train_s = time.perf_counter() - start_s
    model, checkpoint = load_checkpoint(work / "run" / "checkpoint.pt")
    x = torch.from_numpy(preprocess(X / 16.0, checkpoint.preprocessing))
    return encoder_means(model, x), train_s


def group_figures(
    mu: NDArray, labels: NDArray[np.int64], density: str
) -> tuple[list[dict[str, Any]], NDArray[np.float64]]:
    """The report's group figures and its per-row log density."""
    acc = BiasAccumulator(mu.shape[1], max_rows=len(mu))
    acc.add(mu, groups={"digit": [str(v) for v in labels]})
    report = acc.finish(BiasOptions(density=density), None)
    return _figures(report.groups), report.log_density


def baseline_log_densities(
    mu: NDArray, pixels: NDArray, args: argparse.Namespace
) -> dict[str, NDArray[np.float64]]:
    """Densities outside the report whose enrichment is measured beside its own."""
    out = {f"pixel_knn@{name}": pixel_knn_log_density(pixels, f)
           for name, f in BASELINE_FRACTIONS.items()}
    out["knn@0.5%"] = knn_log_density([mu.astype(np.float32)], len(mu), fraction=0.005)
    k, r = args.mixture_components, args.mixture_restarts
    out["mixture"] = mixture_log_density(mu, k, r)
    out["mixture-b"] = mixture_log_density(mu, k, r, first_seed=r)
    for seed in range(3):
        out[f"mixture@fit{seed}"] = mixture_log_density(mu, k, 1, first_seed=seed)
    return out


def fraction_figures(
    mu: NDArray, labels: NDArray[np.int64], fraction: float
) -> list[dict[str, Any]]:
    """The report's group tests on the sparse set of a k-NN density with k = fraction x rows."""
    log_density = knn_log_density([mu.astype(np.float32)], len(mu), fraction=fraction)
    n, options = len(mu), BiasOptions()
    n_sparse = max(1, int(round(options.sparse_fraction * n)))
    sparse = np.zeros(n, dtype=bool)
    sparse[np.argpartition(log_density, n_sparse - 1)[:n_sparse]] = True
    counts = [GroupCounts("digit", str(d), int(np.sum(labels == d)),
                          int(np.sum(sparse & (labels == d))), 0.0) for d in range(N_DIGITS)]
    return _figures(group_stats(counts, n, n_sparse, options.significance_level))


def _figures(groups: list[Any]) -> list[dict[str, Any]]:
    return [{"digit": int(g.value), "n_rows": g.n_rows, "n_sparse_rows": g.n_sparse_rows,
             "ratio": g.representation_ratio, "ratio_low": g.ratio_low,
             "ratio_high": g.ratio_high, "p_value": g.p_value, "flagged": g.flagged}
            for g in groups]


def run_one(
    X: NDArray, y: NDArray[np.int64], rare: int | None, args: argparse.Namespace, seed: int,
    work: Path,
) -> dict[str, Any]:
    rows = kept_rows(y, rare, args.share, seed)
    mu, train_s = train_and_encode(X[rows], work, seed, args.epochs)
    out: dict[str, Any] = {"seed": seed, "rare_digit": rare, "n_rows": len(rows),
                           "n_rare_rows": None if rare is None else int(np.sum(y[rows] == rare)),
                           "latent_dim": int(mu.shape[1]), "train_s": train_s, "densities": {}}
    is_rare = y[rows] == rare
    for density in args.densities:
        start_s = time.perf_counter()
        groups, log_density = group_figures(mu, y[rows], density)
        out["densities"][density] = {"groups": groups, "report_s": time.perf_counter() - start_s}
        if rare is not None:
            out["densities"][density]["enrichment"] = enrichment(log_density, is_rare)
    if rare is not None:
        for name, log_density in baseline_log_densities(mu, X[rows] / 16.0, args).items():
            out["densities"][name] = {"enrichment": enrichment(log_density, is_rare)}
    for fraction, name in zip(args.knn_fractions, args.variants[len(args.densities):],
                              strict=True):
        out["densities"][name] = {"groups": fraction_figures(mu, y[rows], fraction)}
    logger.warning("seed %d, rare digit %s: %d rows, trained in %.1f s", seed,
                   "none" if rare is None else rare, len(rows), train_s)
    return out


def found(run: dict[str, Any], density: str) -> bool:
    g = run["densities"][density]["groups"][run["rare_digit"]]
    return bool(g["flagged"] and g["ratio"] > 1)


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for density in args.variants:
        per_seed = {}
        for seed in args.seeds:
            rare_runs = [r for r in runs if r["seed"] == seed and r["rare_digit"] is not None]
            balanced = next(r for r in runs if r["seed"] == seed and r["rare_digit"] is None)
            flagged = [g for g in balanced["densities"][density]["groups"] if g["flagged"]]
            per_seed[str(seed)] = {
                "found": [r["rare_digit"] for r in rare_runs if found(r, density)],
                "balanced_flagged": {str(g["digit"]): "above" if g["ratio"] > 1 else "below"
                                     for g in flagged},
            }
        summary[density] = {
            "found_total": sum(len(s["found"]) for s in per_seed.values()),
            "reports": N_DIGITS * len(args.seeds),
            "per_seed": per_seed,
        }
    return summary


def enrichment_summary(runs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Per density: each seed's enrichment of every rare digit (0..9), its mean, and the mean
    over the seeds."""
    rare_runs = [r for r in runs if r["rare_digit"] is not None]
    names = [n for n, f in rare_runs[0]["densities"].items() if "enrichment" in f]
    out: dict[str, Any] = {}
    for name in names:
        per_seed = {}
        for seed in seeds:
            by_digit = sorted((r["rare_digit"], r["densities"][name]["enrichment"])
                              for r in rare_runs if r["seed"] == seed)
            values = [v for _, v in by_digit]
            per_seed[str(seed)] = {"per_digit": values, "mean": float(np.mean(values))}
        out[name] = {"per_seed": per_seed,
                     "mean": float(np.mean([s["mean"] for s in per_seed.values()]))}
    return out


def print_enrichment(summary: dict[str, Any], share: float) -> None:
    print(f"\nenrichment of the rare digit (kept at {share:.0%}) among the sparsest 5% of rows")
    print(f"{'density':<16}{'seed':>5}" + "".join(f"{d:>6}" for d in range(N_DIGITS))
          + f"{'mean':>7}")
    for name, figures in summary.items():
        for seed, f in figures["per_seed"].items():
            print(f"{name:<16}{seed:>5}" + "".join(f"{v:>6.1f}" for v in f["per_digit"])
                  + f"{f['mean']:>7.2f}")
        print(f"{name:<16}{'all':>5}{'':>{6 * N_DIGITS}}{figures['mean']:>7.2f}")


def timing(n_rows: int, seed: int = 0) -> dict[str, Any]:
    """Seconds of each density step of a report over `n_rows` synthetic means."""
    rng = np.random.default_rng(seed)
    blocks = [rng.normal(size=(min(65_536, n_rows - s), TIMING_LATENT_DIM)).astype(np.float32)
              for s in range(0, n_rows, 65_536)]
    lo = np.min([b.min(axis=0) for b in blocks], axis=0)
    hi = np.max([b.max(axis=0) for b in blocks], axis=0)
    options = BiasOptions()
    start_s = time.perf_counter()
    hist = latent_histograms(blocks, lo, hi, n_rows, options.bins)
    log_density_and_weight(blocks, hist, options.alpha, options.mode)
    histogram_s = time.perf_counter() - start_s
    start_s = time.perf_counter()
    knn_log_density(blocks, n_rows)
    knn_s = time.perf_counter() - start_s
    return {"n_rows": n_rows, "latent_dim": TIMING_LATENT_DIM,
            "histogram_and_weights_s": histogram_s, "knn_s": knn_s}


def _cell(g: dict[str, Any]) -> str:
    mark = "*" if g["flagged"] else " "
    return (f"{g['ratio']:5.2f} [{g['ratio_low']:4.2f},{g['ratio_high']:5.2f}] "
            f"p={g['p_value']:7.1e}{mark}")


def print_tables(results: dict[str, Any], args: argparse.Namespace) -> None:
    densities = args.densities
    header = "".join(f"  {d + ' ratio [interval] p (* flagged)':<36}" for d in densities)
    for seed in args.seeds:
        print(f"\nseed {seed}: the rare digit kept at {args.share:.0%} of the rows")
        print(f"{'digit':>5}{'rows':>6}{'rare':>5}{header}")
        for r in results["runs"]:
            if r["seed"] != seed or r["rare_digit"] is None:
                continue
            d = r["rare_digit"]
            cells = "".join(f"  {_cell(r['densities'][x]['groups'][d]):<36}" for x in densities)
            print(f"{d:>5}{r['n_rows']:>6}{r['n_rare_rows']:>5}{cells}")
    print("\nrare digit found (flagged, ratio above 1) | balanced digits flagged "
          "(+ above 1, - below)")
    for density in args.variants:
        s = results["summary"][density]
        print(f"{density:<10} {s['found_total']:>2} of {s['reports']} reports")
        for seed, figures in s["per_seed"].items():
            balanced = " ".join(f"{k}{'+' if v == 'above' else '-'}"
                                for k, v in figures["balanced_flagged"].items())
            print(f"  seed {seed}: found {len(figures['found'])}/10 "
                  f"{figures['found']} | balanced: {len(figures['balanced_flagged'])} "
                  f"flagged {balanced}")
    if "timing" in results:
        t = results["timing"]
        print(f"\ndensity step of a {t['n_rows']:,}-row report ({t['latent_dim']}-wide means): "
              f"histograms and weights {t['histogram_and_weights_s']:.1f} s, "
              f"knn {t['knn_s']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("latentwatch").setLevel(logging.ERROR)  # one training log line per run
    started_s = time.perf_counter()
    X, y = load_digits()
    runs = []
    with tempfile.TemporaryDirectory(prefix="latentwatch-bias-digits-") as tmp:
        for seed in args.seeds:
            for rare in [None, *range(N_DIGITS)]:
                runs.append(run_one(X, y, rare, args, seed, Path(tmp)))
    results: dict[str, Any] = {"runs": runs, "summary": summarise(runs, args),
                               "enrichment": enrichment_summary(runs, args.seeds)}
    if args.timing_rows:
        results["timing"] = timing(args.timing_rows)
    results["settings"] = {k: (str(v) if isinstance(v, Path) else v)
                           for k, v in vars(args).items()}
    results["settings"]["knn_fraction"] = KNN_FRACTION  # the report's k as a share of the rows
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": sys.version.split()[0]}
    results["total_s"] = time.perf_counter() - started_s
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results, args)
    print_enrichment(results["enrichment"], args.share)
    print(f"\ntotal {results['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
