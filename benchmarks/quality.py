"""Anomaly-detection quality of latentwatch against PyOD's classical detectors.

    python benchmarks/quality.py --adbench-dir DIR --images-dir DIR --json out.json
        [--datasets A,B] [--seeds N] [--max-train-rows N] [--max-test-rows N]
        [--epochs N] [--pyod-vae-epochs N] [--max-image-train-rows N]
        [--max-image-test-rows N] [--image-epochs N] [--skip-tabular] [--skip-images] [--quick]

Tabular, clean-train protocol (as in the DTE benchmark, ICLR 2024), for every .npz (keys X, y)
in --adbench-dir and every seed: the normal rows are shuffled with the seed; half of them form
the training pool, the other half plus every anomaly form the test set. Pools and test sets
above the caps are subsampled (the test set stratified, keeping its anomaly fraction).

- latentwatch trains a VAE on the pool exactly as `latentwatch train` does: its own seeded split
  carves a calibration slice (never trained or early-stopped on) and a validation slice out of
  the pool. The run is exported to a temporary model repository, and the exported version scores
  the test rows offline (ONNX Runtime, no server): every score kind and its conformal p-values.
- PyOD's IForest, KNN, PCA, ECOD and VAE are fitted on the whole pool, standardised with the
  pool's mean and std (see quality_baselines.py), and score the same test rows.

Reported per dataset (means over seeds): AUROC and AUPR (average precision) of latentwatch's
default score kind, its neg_elbo and recon_error kinds (every kind in the JSON) and the
baselines; the observed false-alarm rate of the default kind's p-values on the test normals at
alpha in {0.01, 0.05, 0.1}, and the observed false discovery rate of Benjamini-Hochberg at
q = 0.1 over the whole test set.

Images: Fashion-MNIST -> MNIST and MNIST -> Fashion-MNIST: train on the first's training split
(conv VAE, Bernoulli decoder), score the first's test split (normal) and the other's test split
(outliers); AUROC of every score kind. One seed (the first).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from quality_baselines import BASELINES, DEFAULT_PYOD_VAE_EPOCHS, pyod_available, run_baselines

logger = logging.getLogger("quality")

REPO_ROOT = Path(__file__).resolve().parents[1]
ALPHAS = (0.01, 0.05, 0.1)
FDR_LEVEL = 0.1
# Columns of the printed tables: latentwatch's kinds, then the PyOD baselines.
LATENTWATCH_COLUMNS = ("default", "neg_elbo", "recon_error")
IMAGE_PAIRS = (("fashion-mnist", "mnist"), ("mnist", "fashion-mnist"))
IMAGE_TRAIN_FILE = "train-images-idx3-ubyte.gz"
IMAGE_TEST_FILE = "t10k-images-idx3-ubyte.gz"
# Defaults sized so that 29 sets x 3 seeds, all methods and both image pairs fit 45 minutes on
# 2 shared cores (see the timings in the JSON); --quick shrinks everything for smoke tests.
DEFAULT_MAX_TRAIN_ROWS = 10_000
DEFAULT_MAX_TEST_ROWS = 10_000
DEFAULT_IMAGE_EPOCHS = 10
QUICK = {"seeds": 1, "n_datasets": 3, "max_train_rows": 2000, "max_test_rows": 2000,
         "epochs": 10, "pyod_vae_epochs": 2, "max_image_train_rows": 2000,
         "max_image_test_rows": 1000, "image_epochs": 1}


# ---- splits ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CleanTrainSplit:
    """One seed's clean-train split of a labelled tabular set."""

    pool: NDArray[np.float32]  # (P, F) normal rows only: what every method trains on
    test: NDArray[np.float32]  # (N, F) the other normals and the anomalies
    y_test: NDArray[np.int64]  # (N,) 1 = anomaly
    n_pool_uncapped: int
    n_test_uncapped: int

    def describe(self) -> dict[str, Any]:
        return {
            "n_pool": int(self.pool.shape[0]),
            "n_test": int(self.test.shape[0]),
            "n_test_anomalies": int(self.y_test.sum()),
            "n_pool_uncapped": self.n_pool_uncapped,
            "n_test_uncapped": self.n_test_uncapped,
        }


def clean_train_split(
    X: NDArray[np.floating], y: NDArray[np.integer], seed: int,
    max_train_rows: int | None = None, max_test_rows: int | None = None,
) -> CleanTrainSplit:
    """50% of the normals (shuffled with `seed`) -> pool; the rest + all anomalies -> test.

    Above `max_train_rows` the pool is subsampled uniformly; above `max_test_rows` the test set
    is subsampled per class, keeping its anomaly fraction (at least one of each class)."""
    rng = np.random.default_rng(seed)
    normals = rng.permutation(np.flatnonzero(y == 0))
    anomalies = np.flatnonzero(y != 0)
    if normals.size < 2 or anomalies.size < 1:
        raise ValueError(f"need >= 2 normal rows and >= 1 anomaly, got {normals.size} and "
                         f"{anomalies.size}")
    half = normals.size // 2
    pool_idx, test_normals = normals[:half], normals[half:]
    n_pool_uncapped, n_test_uncapped = pool_idx.size, test_normals.size + anomalies.size
    if max_train_rows is not None and pool_idx.size > max_train_rows:
        pool_idx = rng.choice(pool_idx, max_train_rows, replace=False)
    if max_test_rows is not None and n_test_uncapped > max_test_rows:
        n_anomalies = round(max_test_rows * anomalies.size / n_test_uncapped)
        n_anomalies = min(max(1, n_anomalies), anomalies.size, max_test_rows - 1)
        test_normals = rng.choice(test_normals, max_test_rows - n_anomalies, replace=False)
        anomalies = rng.choice(anomalies, n_anomalies, replace=False)
    test_idx = np.concatenate([np.sort(test_normals), np.sort(anomalies)])
    return CleanTrainSplit(
        pool=np.asarray(X[np.sort(pool_idx)], dtype=np.float32),
        test=np.asarray(X[test_idx], dtype=np.float32),
        y_test=(np.asarray(y[test_idx]) != 0).astype(np.int64),
        n_pool_uncapped=int(n_pool_uncapped),
        n_test_uncapped=int(n_test_uncapped),
    )


def load_tabular(path: Path) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """(X (N, F) float64, y (N,) int64) from an ADBench-style .npz; nothing pickled is loaded."""
    with np.load(path, allow_pickle=False) as data:
        return data["X"].astype(np.float64), data["y"].astype(np.int64).reshape(-1)


# ---- metrics --------------------------------------------------------------------------------


def _rank_safe(scores: NDArray[np.floating]) -> NDArray[np.float64] | None:
    """Scores with +-inf moved just past the finite range (ranks unchanged); None if any NaN."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if np.isnan(s).any():
        return None
    finite = np.isfinite(s)
    if finite.all():
        return s
    high = float(s[finite].max()) if finite.any() else 0.0
    low = float(s[finite].min()) if finite.any() else 0.0
    return np.where(s == np.inf, high + 1.0, np.where(s == -np.inf, low - 1.0, s))


def detection_metrics(y: NDArray[np.integer], scores: NDArray[np.floating]) -> dict[str, float]:
    """AUROC and AUPR (average precision) of scores where higher = more anomalous; NaN metrics
    when a score is NaN."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    s = _rank_safe(scores)
    if s is None:
        return {"auroc": float("nan"), "aupr": float("nan")}
    return {"auroc": float(roc_auc_score(y, s)), "aupr": float(average_precision_score(y, s))}


def calibration_metrics(
    y: NDArray[np.integer], p: NDArray[np.floating], n_calibration: int
) -> dict[str, Any]:
    """Observed false-alarm rate on the normals at each alpha, and BH's observed FDR at q."""
    from latentwatch.scoring.contract import benjamini_hochberg

    p = np.asarray(p, dtype=np.float64).reshape(-1)  # (N,)
    normal = np.asarray(y) == 0
    flagged, _ = benjamini_hochberg(p, FDR_LEVEL)
    discoveries = int(flagged.sum())
    false_discoveries = int((flagged & normal).sum())
    n_anomalies = int((~normal).sum())
    return {
        "n_calibration": int(n_calibration),
        "min_alpha": 1.0 / (n_calibration + 1),
        "n_test_normals": int(normal.sum()),
        "false_alarm_rate": {str(a): float(np.mean(p[normal] <= a)) for a in ALPHAS},
        "bh": {
            "q": FDR_LEVEL,
            "discoveries": discoveries,
            "false_discoveries": false_discoveries,
            "fdr": false_discoveries / max(discoveries, 1),
            "power": (discoveries - false_discoveries) / max(n_anomalies, 1),
        },
    }


# ---- latentwatch: train, export, score offline ----------------------------------------------


@dataclass(frozen=True, eq=False)
class LatentwatchScores:
    """Every score kind and its conformal p-values for the test rows, from one exported model."""

    scores: dict[str, NDArray[np.float64]]  # kind -> (N,)
    p_values: dict[str, NDArray[np.float64]]  # kind -> (N,)
    default_kind: str
    n_calibration: int
    training: dict[str, Any]  # split sizes, epochs, model shape
    train_s: float
    export_s: float
    score_s: float

    @property
    def total_s(self) -> float:
        return self.train_s + self.export_s + self.score_s


def latentwatch_scores(
    source: str, test: NDArray[np.float32], work: Path, name: str, seed: int,
    epochs: int | None = None, max_rows: int | None = None,
) -> LatentwatchScores:
    """Train a VAE on `source` (a file latentwatch.data reads), export it into a repository under
    `work`, and score `test` (N, F) with the exported version, as a user of the product would."""
    from latentwatch.export.exporter import export_run
    from latentwatch.models.training import TrainConfig, run_training
    from latentwatch.repository.manifest import Manifest
    from latentwatch.service.offline import OfflineScorer

    run_dir = work / f"run-{name}"
    optional = {"epochs": epochs} if epochs is not None else {}
    config = TrainConfig(data=source, model="vae", out=run_dir, seed=seed, max_rows=max_rows,
                         progress=False, **optional)
    start_s = time.perf_counter()
    result = run_training(config)
    train_s = time.perf_counter() - start_s
    version_dir = export_run(run_dir, work / "repo", name)
    export_s = time.perf_counter() - start_s - train_s
    score_start_s = time.perf_counter()
    scorer = OfflineScorer.from_version_dir(version_dir)
    scores = {k: np.asarray(v, dtype=np.float64) for k, v in scorer.score(test).items()}
    p = {k: np.asarray(v, dtype=np.float64) for k, v in scorer.p_values(scores).items()}
    score_s = time.perf_counter() - score_start_s
    mc = result.model_config
    return LatentwatchScores(
        scores=scores,
        p_values=p,
        default_kind=str(scorer.default_score_kind),
        n_calibration=Manifest.read(version_dir).calibration.size,
        training={**result.split, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                  "body": mc.body, "hidden": list(mc.hidden), "latent_dim": mc.latent_dim,
                  "decoder": mc.decoder},
        train_s=train_s,
        export_s=export_s,
        score_s=score_s,
    )


# ---- tabular --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    seeds: tuple[int, ...]
    max_train_rows: int | None
    max_test_rows: int | None
    epochs: int | None  # latentwatch's training epochs (None: TrainConfig's default)
    pyod_vae_epochs: int
    baselines: tuple[str, ...]  # empty when PyOD is not installed
    max_image_train_rows: int | None
    max_image_test_rows: int | None
    image_epochs: int | None


def run_tabular_seed(
    X: NDArray[np.float64], y: NDArray[np.int64], seed: int, settings: Settings, work: Path,
    name: str,
) -> dict[str, Any]:
    """One dataset, one seed: split, latentwatch, baselines, metrics, calibration."""
    split = clean_train_split(X, y, seed, settings.max_train_rows, settings.max_test_rows)
    entry: dict[str, Any] = {"seed": seed, **split.describe(), "methods": {}}
    methods = entry["methods"]
    seed_dir = work / f"{name}-seed{seed}"
    seed_dir.mkdir(parents=True)
    pool_path = seed_dir / "pool.npy"
    np.save(pool_path, split.pool, allow_pickle=False)
    try:
        lw = latentwatch_scores(str(pool_path), split.test, seed_dir, "quality", seed,
                                epochs=settings.epochs)
    except Exception as err:  # recorded and shown; one failed set must not end a 45-minute run
        logger.exception("%s seed %d: latentwatch failed", name, seed)
        entry["latentwatch"] = {"error": f"{type(err).__name__}: {err}"}
    else:
        kinds = {k: detection_metrics(split.y_test, s) for k, s in lw.scores.items()}
        entry["latentwatch"] = {
            "default_kind": lw.default_kind, "n_calibration": lw.n_calibration,
            "training": lw.training, "train_s": lw.train_s, "export_s": lw.export_s,
            "score_s": lw.score_s, "kinds": kinds,
        }
        for column in LATENTWATCH_COLUMNS:
            kind = lw.default_kind if column == "default" else column
            if kind in kinds:
                methods[column] = {**kinds[kind], "seconds": lw.total_s}
        entry["calibration"] = {
            "kind": lw.default_kind,
            **calibration_metrics(split.y_test, lw.p_values[lw.default_kind], lw.n_calibration),
        }
    for method, result in run_baselines(split.pool, split.test, seed, settings.baselines,
                                        settings.pyod_vae_epochs).items():
        timing: dict[str, Any] = {"seconds": result.fit_s + result.score_s,
                                  "fit_s": result.fit_s, "score_s": result.score_s}
        if result.note:
            timing["note"] = result.note
        if result.scores is None:
            methods[method] = {"auroc": float("nan"), "aupr": float("nan"), **timing,
                               "error": result.error}
        else:
            methods[method] = {**detection_metrics(split.y_test, result.scores), **timing}
    return entry


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summarize_seeds(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-method means over seeds (AUROC, AUPR, seconds) and mean calibration figures."""
    names = sorted({m for s in seeds for m in s["methods"]})
    methods = {
        m: {key: _mean([s["methods"][m][key] for s in seeds if m in s["methods"]])
            for key in ("auroc", "aupr", "seconds")}
        for m in names
    }
    calibrated = [s["calibration"] for s in seeds if "calibration" in s]
    calibration: dict[str, Any] = {}
    if calibrated:
        calibration = {
            "n_calibration": _mean([c["n_calibration"] for c in calibrated]),
            "false_alarm_rate": {str(a): _mean([c["false_alarm_rate"][str(a)] for c in calibrated])
                                 for a in ALPHAS},
            "bh_fdr": _mean([c["bh"]["fdr"] for c in calibrated]),
            "bh_power": _mean([c["bh"]["power"] for c in calibrated]),
        }
    return {"methods": methods, "calibration": calibration}


def summarize_datasets(datasets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The MEAN row over datasets, the best PyOD baseline and default - best in AUROC points."""
    names = sorted({m for d in datasets.values() for m in d["mean"]["methods"]})
    mean = {
        m: {key: _mean([d["mean"]["methods"][m][key] for d in datasets.values()
                        if m in d["mean"]["methods"]])
            for key in ("auroc", "aupr", "seconds")}
        for m in names
    }
    for m in names:
        mean[m]["n_datasets"] = sum(m in d["mean"]["methods"] for d in datasets.values())
    baselines = [m for m in BASELINES if m in mean and np.isfinite(mean[m]["auroc"])]
    best = max(baselines, key=lambda m: mean[m]["auroc"]) if baselines else None
    delta = None
    if best is not None and "default" in mean:
        delta = 100.0 * (mean["default"]["auroc"] - mean[best]["auroc"])
    calibrated = [d["mean"]["calibration"] for d in datasets.values() if d["mean"]["calibration"]]
    calibration = {}
    if calibrated:
        calibration = {
            "false_alarm_rate": {str(a): _mean([c["false_alarm_rate"][str(a)] for c in calibrated])
                                 for a in ALPHAS},
            "bh_fdr": _mean([c["bh_fdr"] for c in calibrated]),
            "bh_power": _mean([c["bh_power"] for c in calibrated]),
        }
    return {"methods": mean, "best_baseline": best,
            "default_minus_best_baseline_auroc_points": delta, "calibration": calibration}


def tabular_files(adbench_dir: Path, wanted: Sequence[str] | None, quick: bool) -> list[Path]:
    """Every .npz in the directory, sorted by the number before '_' (ADBench order), filtered
    by name (with or without the number prefix or .npz); --quick keeps the smallest three."""
    files = sorted(adbench_dir.glob("*.npz"), key=_dataset_order)
    if wanted:
        keep = {w.strip().removesuffix(".npz") for w in wanted if w.strip()}
        files = [f for f in files if f.stem in keep or f.stem.split("_", 1)[-1] in keep]
        found = {f.stem for f in files} | {f.stem.split("_", 1)[-1] for f in files}
        if missing := sorted(keep - found):
            raise SystemExit(f"--datasets: not in {adbench_dir}: {', '.join(missing)}")
    elif quick:
        files = sorted(files, key=lambda f: f.stat().st_size)[: QUICK["n_datasets"]]
        files = sorted(files, key=_dataset_order)
    if not files:
        raise SystemExit(f"no .npz files in {adbench_dir}")
    return files


def _dataset_order(path: Path) -> tuple[int, str]:
    head = path.stem.split("_", 1)[0]
    return (int(head) if head.isdigit() else sys.maxsize, path.stem)


def run_tabular(
    files: Sequence[Path], settings: Settings, work: Path, emit: Callable[[str], None]
) -> dict[str, Any]:
    datasets: dict[str, dict[str, Any]] = {}
    for path in files:
        X, y = load_tabular(path)
        name = path.stem
        seeds = []
        for seed in settings.seeds:
            entry = run_tabular_seed(X, y, seed, settings, work, name)
            seeds.append(entry)
            emit(_progress_line(name, entry))
        datasets[name] = {
            "file": path.name, "n_rows": int(X.shape[0]), "n_features": int(X.shape[1]),
            "n_anomalies": int((y != 0).sum()), "seeds": seeds, "mean": summarize_seeds(seeds),
        }
    return {"datasets": datasets, "mean": summarize_datasets(datasets)}


def _progress_line(name: str, entry: dict[str, Any]) -> str:
    lw = entry["latentwatch"]
    if "error" in lw:
        ours = f"latentwatch FAILED ({lw['error']})"
    else:
        auroc = entry["methods"].get("default", {}).get("auroc", float("nan"))
        ours = (f"default={lw['default_kind']} auroc {auroc:.3f} "
                f"(train {lw['train_s']:.1f}s export {lw['export_s']:.1f}s "
                f"score {lw['score_s']:.1f}s)")
    others = " ".join(
        f"{m} {entry['methods'][m]['auroc']:.3f}/{entry['methods'][m]['seconds']:.1f}s"
        for m in BASELINES if m in entry["methods"]
    )
    return (f"{name} seed {entry['seed']}: pool {entry['n_pool']} test {entry['n_test']} "
            f"({entry['n_test_anomalies']} anomalies); {ours}; {others}")


# ---- images ---------------------------------------------------------------------------------


def run_images(images_dir: Path, settings: Settings, work: Path,
               emit: Callable[[str], None]) -> dict[str, Any]:
    """Both directions: train on the first set's training images, score its test images
    (label 0) and the other set's test images (label 1)."""
    from latentwatch.data import load_source

    results: dict[str, Any] = {}
    seed = settings.seeds[0]
    for inlier, outlier in IMAGE_PAIRS:
        key = f"{inlier}->{outlier}"
        train_path = images_dir / inlier / IMAGE_TRAIN_FILE
        normal = load_source(str(images_dir / inlier / IMAGE_TEST_FILE),
                             max_rows=settings.max_image_test_rows).X  # (N0, 784)
        other = load_source(str(images_dir / outlier / IMAGE_TEST_FILE),
                            max_rows=settings.max_image_test_rows).X  # (N1, 784)
        test = np.concatenate([normal, other])
        y = np.concatenate([np.zeros(len(normal), np.int64), np.ones(len(other), np.int64)])
        lw = latentwatch_scores(str(train_path), test, work, key.replace(">", ""), seed,
                                epochs=settings.image_epochs,
                                max_rows=settings.max_image_train_rows)
        kinds = {k: detection_metrics(y, s) for k, s in lw.scores.items()}
        results[key] = {
            "seed": seed, "n_test_normal": int(len(normal)), "n_test_outlier": int(len(other)),
            "default_kind": lw.default_kind, "n_calibration": lw.n_calibration,
            "training": lw.training, "train_s": lw.train_s, "export_s": lw.export_s,
            "score_s": lw.score_s, "kinds": kinds,
            "default": kinds[lw.default_kind],
            "calibration": {"kind": lw.default_kind, **calibration_metrics(
                y, lw.p_values[lw.default_kind], lw.n_calibration)},
        }
        shown = " ".join(f"{k} {v['auroc']:.3f}" for k, v in kinds.items())
        emit(f"images {key}: default={lw.default_kind} auroc {kinds[lw.default_kind]['auroc']:.3f};"
             f" {shown} (train {lw.train_s:.0f}s, {lw.training['epochs_run']} epochs on "
             f"{lw.training['n_train']} rows; export {lw.export_s:.0f}s; score {lw.score_s:.0f}s)")
    return results


# ---- output ---------------------------------------------------------------------------------


def _fmt(value: float | None, scale: float = 100.0, width: int = 9, digits: int = 1) -> str:
    if value is None or not np.isfinite(value):
        return f"{'n/a':>{width}}"
    return f"{value * scale:{width}.{digits}f}"


def metric_table(tabular: dict[str, Any], metric: str) -> str:
    """Rows datasets, columns methods, values in percent; a MEAN row last."""
    columns = [*LATENTWATCH_COLUMNS, *BASELINES]
    width = max(12, *(len(name) for name in tabular["datasets"])) + 1
    lines = [f"{metric.upper() + ' (%)':{width}}" + "".join(f"{c:>12}" for c in columns)]
    for name, d in tabular["datasets"].items():
        row = d["mean"]["methods"]
        lines.append(f"{name:{width}}" + "".join(
            _fmt(row[c][metric], width=12) if c in row else f"{'-':>12}" for c in columns))
    mean = tabular["mean"]["methods"]
    lines.append(f"{'MEAN':{width}}" + "".join(
        _fmt(mean[c][metric], width=12) if c in mean else f"{'-':>12}" for c in columns))
    return "\n".join(lines)


def calibration_table(tabular: dict[str, Any]) -> str:
    """Observed false-alarm rates at each alpha and BH's FDR, per dataset and mean."""
    width = max(12, *(len(name) for name in tabular["datasets"])) + 1
    head = "".join(f"{'FAR@' + str(a):>10}" for a in ALPHAS)
    lines = [f"{'calibration':{width}}{'n_cal':>7}{'min_a':>8}{head}{'BH FDR':>9}{'BH pow':>9}"]

    def row(label: str, c: dict[str, Any], n_cal: str, min_alpha: str) -> str:
        rates = "".join(_fmt(c["false_alarm_rate"][str(a)], 1.0, 10, 3) for a in ALPHAS)
        return (f"{label:{width}}{n_cal:>7}{min_alpha:>8}{rates}"
                f"{_fmt(c['bh_fdr'], 1.0, 9, 3)}{_fmt(c['bh_power'], 1.0, 9, 3)}")

    for name, d in tabular["datasets"].items():
        c = d["mean"]["calibration"]
        if c:
            n = c["n_calibration"]
            lines.append(row(name, c, f"{n:.0f}", f"{1.0 / (n + 1):.4f}"))
    if tabular["mean"]["calibration"]:
        lines.append(row("MEAN", tabular["mean"]["calibration"], "", ""))
    return "\n".join(lines)


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    tabular = report.get("tabular")
    if tabular:
        mean = tabular["mean"]
        best = mean["best_baseline"]
        if best is not None and "default" in mean["methods"]:
            lines.append(
                f"mean AUROC: default {100 * mean['methods']['default']['auroc']:.1f}, best PyOD "
                f"baseline {best} {100 * mean['methods'][best]['auroc']:.1f}; default - best = "
                f"{mean['default_minus_best_baseline_auroc_points']:+.1f} points (target >= +1)"
            )
    for key, image in report.get("images", {}).items():
        shown = ", ".join(f"{k} {image['kinds'][k]['auroc']:.4f}"
                          for k in ("neg_elbo", "iwae_nll") if k in image["kinds"])
        lines.append(f"images {key}: AUROC default ({image['default_kind']}) "
                     f"{image['default']['auroc']:.4f} (target >= 0.99); {shown}")
    return lines


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in ("latentwatch", "pyod", "onnxruntime-gpu", "onnxruntime", "torch", "numpy",
                    "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def json_safe(value: Any) -> Any:
    """The report with NaN and infinities as null, so that the file is strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _emit(line: str) -> None:
    print(line, flush=True)


def _optional_cap(value: int) -> int | None:
    return None if value <= 0 else value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, type=Path, help="file to write the figures to")
    parser.add_argument("--adbench-dir", type=Path, default=None,
                        help="directory of .npz files with keys X, y (every one is run)")
    parser.add_argument("--images-dir", type=Path, default=None,
                        help="directory holding mnist/ and fashion-mnist/ IDX .gz files")
    parser.add_argument("--datasets", default=None,
                        help="comma list of tabular sets to run (e.g. 4_breastw,Pima)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--max-train-rows", type=int, default=None,
                        help=f"cap on the training pool, 0 = none (default "
                             f"{DEFAULT_MAX_TRAIN_ROWS})")
    parser.add_argument("--max-test-rows", type=int, default=None,
                        help=f"cap on the test set, stratified, 0 = none (default "
                             f"{DEFAULT_MAX_TEST_ROWS})")
    parser.add_argument("--epochs", type=int, default=None,
                        help="latentwatch's tabular training epochs at most (default: "
                             "`latentwatch train`'s, with early stopping)")
    parser.add_argument("--pyod-vae-epochs", type=int, default=None,
                        help=f"PyOD VAE epochs (default {DEFAULT_PYOD_VAE_EPOCHS}; PyOD's own "
                             "default is 30)")
    parser.add_argument("--max-image-train-rows", type=int, default=None,
                        help="cap on the image training split, 0 = all 60000 (default all)")
    parser.add_argument("--max-image-test-rows", type=int, default=None,
                        help="cap on each image test split, 0 = all 10000 (default all)")
    parser.add_argument("--image-epochs", type=int, default=None,
                        help=f"image training epochs at most (default {DEFAULT_IMAGE_EPOCHS})")
    parser.add_argument("--skip-tabular", action="store_true", help="no tabular sets")
    parser.add_argument("--skip-images", action="store_true", help="no image pairs")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 3 smallest sets, 1 seed, small caps and epochs")
    args = parser.parse_args(argv)
    if not args.skip_tabular and args.adbench_dir is None:
        parser.error("--adbench-dir is required unless --skip-tabular")
    if not args.skip_images and args.images_dir is None:
        parser.error("--images-dir is required unless --skip-images")
    return args


def resolve_settings(args: argparse.Namespace, baselines: tuple[str, ...]) -> Settings:
    """Flags over --quick's values over the full run's defaults."""
    quick = args.quick

    def pick(flag: Any, quick_value: Any, default: Any) -> Any:
        return flag if flag is not None else (quick_value if quick else default)

    n_seeds = pick(args.seeds, QUICK["seeds"], 3)
    if n_seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    train_cap = pick(args.max_train_rows, QUICK["max_train_rows"], DEFAULT_MAX_TRAIN_ROWS)
    test_cap = pick(args.max_test_rows, QUICK["max_test_rows"], DEFAULT_MAX_TEST_ROWS)
    image_train_cap = pick(args.max_image_train_rows, QUICK["max_image_train_rows"], 0)
    image_test_cap = pick(args.max_image_test_rows, QUICK["max_image_test_rows"], 0)
    return Settings(
        seeds=tuple(range(n_seeds)),
        max_train_rows=_optional_cap(train_cap),
        max_test_rows=_optional_cap(test_cap),
        epochs=pick(args.epochs, QUICK["epochs"], None),
        pyod_vae_epochs=pick(args.pyod_vae_epochs, QUICK["pyod_vae_epochs"],
                             DEFAULT_PYOD_VAE_EPOCHS),
        baselines=baselines,
        max_image_train_rows=_optional_cap(image_train_cap),
        max_image_test_rows=_optional_cap(image_test_cap),
        image_epochs=pick(args.image_epochs, QUICK["image_epochs"], DEFAULT_IMAGE_EPOCHS),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    pyod_missing = pyod_available()
    if pyod_missing:
        logger.warning("running without the PyOD baselines: %s", pyod_missing)
    settings = resolve_settings(args, () if pyod_missing else BASELINES)
    caps = {
        "max_train_rows": settings.max_train_rows, "max_test_rows": settings.max_test_rows,
        "latentwatch_epochs": settings.epochs, "pyod_vae_epochs": settings.pyod_vae_epochs,
        "max_image_train_rows": settings.max_image_train_rows,
        "max_image_test_rows": settings.max_image_test_rows,
        "image_epochs": settings.image_epochs,
    }
    _emit("caps (None = no cap / default): "
          + ", ".join(f"{k}={v}" for k, v in caps.items()) + f"; seeds {list(settings.seeds)}")
    started_s = time.perf_counter()
    report: dict[str, Any] = {
        "protocol": {
            "tabular": "clean-train (DTE, ICLR 2024): per seed, normals shuffled; 50% -> pool, "
                       "the other 50% + all anomalies -> test; pool and test subsampled above "
                       "the caps (test stratified)",
            "latentwatch": "VAE trained on the pool with `latentwatch train` defaults (its own "
                           "seeded split carves calibration and validation slices from the "
                           "pool), exported, scored offline from the exported version",
            "baselines": "PyOD defaults, fitted on the whole pool standardised with the pool's "
                         "mean/std; IForest, PCA and the VAE seeded; the VAE's epochs capped; "
                         "PCA refitted on the pool's numerical rank when rank-deficient (PyOD's "
                         "default divides by a zero eigenvalue there: every score inf)",
            "images": "train on the first set's training split, score its test split (normal) "
                      "and the other set's test split (outlier); first seed only",
            "calibration": f"default kind's conformal p-values: false-alarm rate on the test "
                           f"normals at alpha {list(ALPHAS)}; Benjamini-Hochberg at q "
                           f"{FDR_LEVEL} over the whole test set",
        },
        "caps": caps,
        "seeds": list(settings.seeds),
        "baselines": list(settings.baselines),
        "baselines_skipped": pyod_missing,
    }
    with tempfile.TemporaryDirectory(prefix="latentwatch-quality-") as tmp:
        work = Path(tmp)
        if not args.skip_tabular:
            wanted = args.datasets.split(",") if args.datasets else None
            files = tabular_files(args.adbench_dir, wanted, args.quick)
            _emit(f"tabular: {len(files)} sets x {len(settings.seeds)} seeds")
            report["tabular"] = run_tabular(files, settings, work / "tabular", _emit)
        if not args.skip_images:
            report["images"] = run_images(args.images_dir, settings, work / "images", _emit)
    report["versions"] = _versions()
    report["machine"] = _machine()
    report["total_s"] = time.perf_counter() - started_s
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    if "tabular" in report:
        _emit("\n" + metric_table(report["tabular"], "auroc"))
        _emit("\n" + metric_table(report["tabular"], "aupr"))
        _emit("\n" + calibration_table(report["tabular"]))
    _emit("")
    for line in summary_lines(report):
        _emit(line)
    _emit(f"wrote {args.json}; total {report['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
