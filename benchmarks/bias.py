"""Bias reports and DB-VAE debiasing on Fashion-MNIST with a planted rare class.

    python benchmarks/bias.py --images-dir DIR --json out.json
        [--rare-classes 8,1] [--keep 0.02] [--epochs N] [--body mlp|conv] [--latent-dim N]
        [--debias-modes max,knn] [--densities knn,histogram] [--no-classifier]
        [--classifier-weight W] [--quick]

For every rare class c: the Fashion-MNIST training split keeps only `--keep` (2%) of class c's
rows. A plain VAE and one DB-VAE per resampling mode of `--debias-modes` (`latentwatch train
--model dbvae --debias-mode M`, adaptive resampling) train on that biased set with the same seed
and schedule, are exported, and served by a real `latentwatch serve`. Everything below goes over
gRPC.

- Planted bias: a BiasReport over the biased training set per model and report density
  (`--densities`), with the class as a group column. Enrichment = the rare class's share among
  the 5% of rows with the lowest density, divided by its share of the set (target >= 5). Also the
  class's representation ratio. Beside them, from the same encoder means (Encode RPC), a k-NN
  density with k at 0.5% (the report's KNN_FRACTION) and at 5% of the rows, and the naive
  baseline, a k-NN density of the pixels (no model) at both k.
- Debiasing: per-class reconstruction error (Score RPC, `recon_error`) on the balanced test split
  (1,000 rows per class) for every model; gap = mean error of the rare class minus the mean of
  the other classes. Target: a DB-VAE's gap is at least 50% smaller than the plain VAE's. The
  DB-VAEs train their classifier head jointly unless --no-classifier.
- Drift (first rare class's plain VAE): BiasReport drift of a matched split (the test split with
  the same planted bias), the balanced test split, and MNIST's test split.
- Time for one 60,000-row BiasReport over gRPC (the full training split, with the class groups).

Prints the tables and writes every figure to the JSON file.
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
from bias_enrichment import BASELINE_FRACTIONS, BOTTOM_FRACTION, enrichment, pixel_knn_log_density
from numpy.typing import NDArray
from processes import start_latentwatch

from latentwatch.bias.density import KNN_FRACTION, knn_log_density
from latentwatch.bias.options import DENSITIES, MODES, BiasOptions
from latentwatch.client.client import LatentwatchClient
from latentwatch.families import family

logger = logging.getLogger("bias")

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
TRAIN_FILE, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TEST_FILE, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
SEED = 0
QUICK = {"epochs": 2, "max_rows": 6000, "rare_classes": (8,)}


def load_split(directory: Path, images: str) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    from latentwatch.data import load_source

    data = load_source(str(directory / images))  # the labels file beside it is read too
    if data.y is None:
        raise SystemExit(f"{directory / images}: no labels file beside it")
    return data.X, data.y


def plant_bias(
    y: NDArray[np.int64], rare: int, keep: float, seed: int
) -> NDArray[np.int64]:
    """Row indices keeping every row except all but `keep` of class `rare` (at least one)."""
    rng = np.random.default_rng(seed + rare)
    rare_rows = np.flatnonzero(y == rare)
    kept = rng.choice(rare_rows, max(1, int(round(keep * len(rare_rows)))), replace=False)
    return np.sort(np.concatenate([np.flatnonzero(y != rare), kept]))


def train_and_export(
    data_file: Path, kind: str, name: str, repo: Path, work: Path, args: argparse.Namespace,
    debias_mode: str | None = None,
) -> dict[str, Any]:
    from latentwatch.export.exporter import export_run
    from latentwatch.models.training import TrainConfig, run_training

    options: dict[str, Any] = {"body": args.body, "latent_dim": args.latent_dim, "seed": SEED,
                               "progress": False}
    if args.epochs is not None:
        options["epochs"] = args.epochs
    if args.hidden:
        options["hidden"] = tuple(int(h) for h in args.hidden.split(","))
    if family(kind).resamples:  # the DB-VAE's resampling and classifier-head options
        options["debias_mode"] = debias_mode
        options["classifier"] = args.classifier
        if args.classifier:
            options["classifier_weight"] = args.classifier_weight
    start_s = time.perf_counter()
    result = run_training(TrainConfig(data=str(data_file), model=kind,
                                      out=work / f"run-{name}", **options))
    train_s = time.perf_counter() - start_s
    export_run(work / f"run-{name}", repo, name)
    history = json.loads((work / f"run-{name}" / "metrics.json").read_text())["history"]
    logger.warning("trained %s in %.0f s (%d epochs, best %d)", name, train_s,
                   result.epochs_run, result.best_epoch)
    return {"train_s": train_s, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "final_losses": result.final_losses,
            "ess_per_epoch": [h.get("ess") for h in history]}


def per_class_recon(
    client: LatentwatchClient, model: str, X: NDArray, y: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Mean reconstruction error per class (10,), scored by the server."""
    errors = []
    for start in range(0, len(X), 4096):
        result = client.score(model, X[start : start + 4096], kinds=["recon_error"])
        errors.append(result.scores["recon_error"])
    error = np.concatenate(errors)
    return np.array([error[y == c].mean() for c in range(10)])


def per_class_recall(
    client: LatentwatchClient, model: str, run_dir: Path, X: NDArray, y: NDArray[np.int64]
) -> NDArray[np.float64] | None:
    """Recall per class (10,) of the DB-VAE's classifier head on the served encoder's means;
    None when the run trained no head."""
    import torch

    from latentwatch.models.checkpoint import load_classifier

    head = load_classifier(run_dir / "checkpoint.pt")
    if head is None:
        return None
    mu = np.concatenate([client.encode(model, X[s : s + 4096])[0] for s in range(0, len(X), 4096)])
    with torch.no_grad():
        predicted = head(torch.from_numpy(mu)).argmax(dim=1).numpy()
    return np.array([(predicted[y == c] == c).mean() for c in range(10)])


def gap(per_class: NDArray[np.float64], rare: int) -> float:
    return float(per_class[rare] - np.delete(per_class, rare).mean())


def planted_bias_figures(
    client: LatentwatchClient, model: str, X: NDArray, y: NDArray[np.int64], rare: int,
    mode: str, density: str,
) -> dict[str, Any]:
    start_s = time.perf_counter()
    report = client.bias_report(model, X, groups={"class": [CLASS_NAMES[c] for c in y]},
                                mode=mode, density=density)
    elapsed_s = time.perf_counter() - start_s
    base_rate = float((y == rare).mean())
    bottom_rate = base_rate * enrichment(report.log_density, y == rare)
    group = next(g for g in report.groups if g.value == CLASS_NAMES[rare])
    weight_share = float(report.weight[y == rare].sum() / report.weight.sum())
    return {
        "n_rows": int(len(X)), "n_rare": int((y == rare).sum()), "base_rate": base_rate,
        "density": density, "mode": mode,
        "bottom_5pct_rate": bottom_rate, "enrichment": bottom_rate / base_rate,
        "representation_ratio": group.representation_ratio, "flagged": group.flagged,
        "ratio_interval": [group.ratio_low, group.ratio_high], "p_value": group.p_value,
        "significant": group.significant,
        "sparse_share": group.sparse_share, "rare_weight_share": weight_share,
        "effective_sample_size": report.effective_sample_size, "report_s": elapsed_s,
        "worst_group_ratio": report.worst_group_ratio,
    }


def drift_figures(
    client: LatentwatchClient, model: str, splits: dict[str, NDArray]
) -> dict[str, Any]:
    out = {}
    for name, X in splits.items():
        report = client.bias_report(model, X)
        assert report.drift is not None, "the exported version has no latent reference"
        out[name] = {"n_rows": int(len(X)), "overall": report.drift.overall,
                     "level": report.drift.level, "max_psi": report.drift.max_psi,
                     "gaussian_kl": report.drift.gaussian_kl,
                     "kl_to_prior": report.kl_to_prior_total}
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-dir", type=Path, required=True,
                        help="directory holding fashion-mnist/ and mnist/ IDX .gz files")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--rare-classes", default="8,1",
                        help="classes to make rare, one run each (default 8 Bag, 1 Trouser)")
    parser.add_argument("--keep", type=float, default=0.02, help="share of the rare class kept")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--body", default="mlp", choices=["mlp", "conv"])
    parser.add_argument("--hidden", default="512,256")
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--debias-modes", default="max,knn",
                        help=f"comma-separated DB-VAE resampling modes, one DB-VAE each, of "
                             f"{', '.join(MODES)} (default max,knn)")
    parser.add_argument("--report-mode", default="max", choices=list(MODES))
    parser.add_argument("--densities", default=",".join(DENSITIES),
                        help=f"comma-separated report densities (default {','.join(DENSITIES)})")
    parser.add_argument("--classifier", action=argparse.BooleanOptionalAction, default=True,
                        help="train the DB-VAE's classifier head jointly, as in the paper "
                             "(default; it gives the latent space the class structure that "
                             "resampling then evens out)")
    parser.add_argument("--classifier-weight", type=float, default=1.0)
    parser.add_argument("--max-rows", type=int, default=None,
                        help="use at most this many training rows (quick runs)")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.max_rows = QUICK["epochs"], QUICK["max_rows"]
        args.rare_classes = ",".join(str(c) for c in QUICK["rare_classes"])
    args.rare = [int(c) for c in args.rare_classes.split(",")]
    args.debias_modes = args.debias_modes.split(",")
    args.densities = args.densities.split(",")
    for mode in args.debias_modes:
        BiasOptions(mode=mode).validated()
    for density in args.densities:
        BiasOptions(density=density).validated()
    return args


def model_names(args: argparse.Namespace, rare: int) -> dict[str, str]:
    """Label -> served model name: the plain VAE and one DB-VAE per resampling mode."""
    return {"vae": f"vae-rare{rare}",
            **{f"dbvae-{mode}": f"dbvae-{mode}-rare{rare}" for mode in args.debias_modes}}


def baseline_figures(
    client: LatentwatchClient, model: str, X: NDArray, y: NDArray[np.int64], rare: int
) -> dict[str, float]:
    """Enrichment of k-NN densities of the served encoder's means at the baselines' k."""
    mu = np.concatenate([client.encode(model, X[s : s + 4096])[0] for s in range(0, len(X), 4096)])
    return {f"knn@{name}": enrichment(knn_log_density([mu], len(mu), fraction=f), y == rare)
            for name, f in BASELINE_FRACTIONS.items()}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    fmnist = args.images_dir / "fashion-mnist"
    X_train, y_train = load_split(fmnist, TRAIN_FILE)
    X_test, y_test = load_split(fmnist, TEST_FILE)
    X_mnist, _ = load_split(args.images_dir / "mnist", TEST_FILE)
    if args.max_rows:
        X_train, y_train = X_train[: args.max_rows], y_train[: args.max_rows]
    repo = work / "repo"
    results: dict[str, Any] = {"runs": {}}
    biased_sets = {}
    for rare in args.rare:
        keep = plant_bias(y_train, rare, args.keep, SEED)
        data_file = work / f"fmnist-rare{rare}.npz"
        np.savez(data_file, X=X_train[keep].reshape(-1, 28, 28).astype(np.uint8),
                 y=y_train[keep])
        biased_sets[rare] = keep
        for label, name in model_names(args, rare).items():
            kind, _, mode = label.partition("-")
            results["runs"][name] = train_and_export(data_file, kind, name, repo, work, args,
                                                     mode or None)

    server, target, ready_s = start_latentwatch(repo, work / "server.log", threads=2)
    results["server_ready_s"] = ready_s
    with server, LatentwatchClient(target, timeout_s=3600) as client:
        results["planted"], results["debias"] = {}, {}
        for rare in args.rare:
            keep = biased_sets[rare]
            key = f"rare{rare}"
            X, y = X_train[keep], y_train[keep]
            pixels = {f"pixel_knn@{name}": enrichment(pixel_knn_log_density(X / 255.0, f),
                                                      y == rare)
                      for name, f in BASELINE_FRACTIONS.items()}
            planted: dict[str, Any] = {"n_rows": int(len(X)), "n_rare": int((y == rare).sum()),
                                       "base_rate": float((y == rare).mean()), **pixels,
                                       "models": {}}
            debias: dict[str, Any] = {"rare_class": rare, "modes": {}}
            vae = np.zeros(10)
            for label, name in model_names(args, rare).items():
                figures = {density: planted_bias_figures(client, name, X, y, rare,
                                                         args.report_mode, density)
                           for density in args.densities}
                figures.update(baseline_figures(client, name, X, y, rare))
                planted["models"][label] = figures
                recon = per_class_recon(client, name, X_test, y_test)
                if label == "vae":
                    vae = recon
                    debias.update({"per_class_recon_vae": vae.tolist(), "gap_vae": gap(vae, rare),
                                   "rest_recon_vae": float(np.delete(vae, rare).mean())})
                    continue
                mode = label.partition("-")[2]
                d = {"per_class_recon_dbvae": recon.tolist(), "gap_dbvae": gap(recon, rare),
                     "gap_reduction": 1.0 - gap(recon, rare) / gap(vae, rare),
                     "rest_recon_dbvae": float(np.delete(recon, rare).mean())}
                recall = per_class_recall(client, name, work / f"run-{name}", X_test, y_test)
                if recall is not None:
                    d.update({"per_class_recall_dbvae": recall.tolist(),
                              "recall_rare_dbvae": float(recall[rare]),
                              "recall_rest_dbvae": float(np.delete(recall, rare).mean())})
                debias["modes"][mode] = d
            results["planted"][key], results["debias"][key] = planted, debias
        first = args.rare[0]
        matched = plant_bias(y_test, first, args.keep, SEED + 1)
        results["drift"] = drift_figures(client, f"vae-rare{first}", {
            "matched test split": X_test[matched], "balanced test split": X_test,
            "MNIST test split": X_mnist,
        })
        X_full, y_full = load_split(fmnist, TRAIN_FILE)
        start_s = time.perf_counter()
        report = client.bias_report(f"vae-rare{first}", X_full,
                                    groups={"class": [CLASS_NAMES[c] for c in y_full]})
        results["report_60k"] = {"n_rows": report.n_rows,
                                 "seconds": time.perf_counter() - start_s,
                                 "rows_per_s": report.n_rows / (time.perf_counter() - start_s)}
    return results


def print_tables(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nPlanted bias (class kept at {args.keep:.0%}; report mode {args.report_mode}): "
          f"enrichment among the sparsest {BOTTOM_FRACTION:.0%}")
    for key, p in results["planted"].items():
        pixels = ", ".join(f"{k} {v:.1f}" for k, v in p.items() if k.startswith("pixel_knn"))
        print(f"{key}: {p['n_rare']} of {p['n_rows']} rows ({p['base_rate']:.3%}); {pixels}")
        for model, figures in p["models"].items():
            cells = "  ".join(f"{d} {f:.1f}" if isinstance(f, float) else
                              f"{d} {f['enrichment']:.1f} (ratio {f['representation_ratio']:.2f},"
                              f" rare weight {f['rare_weight_share']:.2%}, ESS "
                              f"{f['effective_sample_size']:.0f})"
                              for d, f in figures.items())
            print(f"  {model:<12}{cells}")
    print("\nDebiasing: recon error on the balanced test split (rare class vs the rest)")
    print(f"{'run':<10}{'mode':<6}{'rare vae':>10}{'rest vae':>10}{'gap vae':>9}{'rare db':>9}"
          f"{'rest db':>9}{'gap db':>8}{'shrink':>8}{'recall rare/rest':>18}")
    for key, d in results["debias"].items():
        rare = d["rare_class"]
        for mode, m in d["modes"].items():
            recall = (f"{m['recall_rare_dbvae']:.3f}/{m['recall_rest_dbvae']:.3f}"
                      if "recall_rare_dbvae" in m else "")
            print(f"{key:<10}{mode:<6}{d['per_class_recon_vae'][rare]:>10.2f}"
                  f"{d['rest_recon_vae']:>10.2f}{d['gap_vae']:>9.2f}"
                  f"{m['per_class_recon_dbvae'][rare]:>9.2f}{m['rest_recon_dbvae']:>9.2f}"
                  f"{m['gap_dbvae']:>8.2f}{m['gap_reduction']:>8.0%}{recall:>18}")
    print("\nDrift against the training reference (plain VAE of the first run)")
    print(f"{'split':<22}{'rows':>7}{'PSI':>8}{'level':>13}{'max PSI':>9}{'gauss KL':>10}")
    for name, d in results["drift"].items():
        print(f"{name:<22}{d['n_rows']:>7}{d['overall']:>8.3f}{d['level']:>13}"
              f"{d['max_psi']:>9.3f}{d['gaussian_kl']:>10.2f}")
    r = results["report_60k"]
    print(f"\n60,000-row report over gRPC: {r['n_rows']} rows in {r['seconds']:.1f} s "
          f"({r['rows_per_s']:,.0f} rows/s)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    started_s = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="latentwatch-bias-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = run(args, work)
    results["settings"] = {k: (str(v) if isinstance(v, Path) else v)
                           for k, v in vars(args).items()}
    results["settings"]["knn_fraction"] = KNN_FRACTION  # the report's k as a share of the rows
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": sys.version.split()[0]}
    results["total_s"] = time.perf_counter() - started_s
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results, args)
    print(f"\ntotal {results['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
