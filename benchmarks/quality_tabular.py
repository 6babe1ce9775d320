"""The tabular half of benchmarks/quality.py: every set and seed, latentwatch and the baselines."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from quality_baselines import BASELINES, run_baselines
from quality_halves import half_of, select_half
from quality_latentwatch import latentwatch_scores
from quality_metrics import ALPHAS, calibration_metrics, detection_metrics, finite_mean
from quality_settings import QUICK, Settings
from quality_split import clean_train_split, load_tabular
from quality_summary import summarize_group, summarize_halves

logger = logging.getLogger(__name__)

# Columns of the printed tables: latentwatch's kinds, then the PyOD baselines.
LATENTWATCH_COLUMNS = ("default", "neg_elbo", "recon_error")


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
                                epochs=settings.epochs,
                                n_importance_samples=settings.n_importance_samples)
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


def summarize_seeds(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-method means over seeds (AUROC, AUPR, seconds) and mean calibration figures."""
    names = sorted({m for s in seeds for m in s["methods"]})
    methods = {
        m: {key: finite_mean([s["methods"][m][key] for s in seeds if m in s["methods"]])
            for key in ("auroc", "aupr", "seconds")}
        for m in names
    }
    calibrated = [s["calibration"] for s in seeds if "calibration" in s]
    calibration: dict[str, Any] = {}
    if calibrated:
        calibration = {
            "n_calibration": finite_mean([c["n_calibration"] for c in calibrated]),
            "false_alarm_rate": {
                str(a): finite_mean([c["false_alarm_rate"][str(a)] for c in calibrated])
                for a in ALPHAS
            },
            "bh_fdr": finite_mean([c["bh"]["fdr"] for c in calibrated]),
            "bh_power": finite_mean([c["bh"]["power"] for c in calibrated]),
        }
    return {"methods": methods, "calibration": calibration}


def tabular_files(
    adbench_dir: Path, wanted: Sequence[str] | None, quick: bool, half: str = "all"
) -> list[Path]:
    """Every .npz in the directory, sorted by the number before '_' (ADBench order), in `half`
    (quality_halves: of the whole directory), filtered by name (with or without the number
    prefix or .npz); --quick keeps the smallest three."""
    every = sorted(adbench_dir.glob("*.npz"), key=_dataset_order)
    in_half = set(select_half([f.stem for f in every], half))
    files = every
    if wanted:
        keep = {w.strip().removesuffix(".npz") for w in wanted if w.strip()}
        files = [f for f in files if f.stem in keep or f.stem.split("_", 1)[-1] in keep]
        found = {f.stem for f in files} | {f.stem.split("_", 1)[-1] for f in files}
        if missing := sorted(keep - found):
            raise SystemExit(f"--datasets: not in {adbench_dir}: {', '.join(missing)}")
        if other := [f.stem for f in files if f.stem not in in_half]:
            raise SystemExit(f"--datasets: not in the {half} half: {', '.join(other)}")
    files = [f for f in files if f.stem in in_half]
    if quick and not wanted:
        files = sorted(files, key=lambda f: f.stat().st_size)[: QUICK["n_datasets"]]
        files = sorted(files, key=_dataset_order)
    if not files:
        raise SystemExit(f"no .npz files in {adbench_dir}")
    return files


def _dataset_order(path: Path) -> tuple[int, str]:
    head = path.stem.split("_", 1)[0]
    return (int(head) if head.isdigit() else sys.maxsize, path.stem)


def run_tabular(
    files: Sequence[Path], settings: Settings, work: Path, emit: Callable[[str], None],
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every set and seed, seed by seed (every set's first seed, then every set's second, ...),
    so that a long run stopped early has measured every set; `checkpoint` gets the results so
    far after each set and seed."""
    datasets: dict[str, dict[str, Any]] = {}
    halves = half_of(f.stem for f in sorted(files[0].parent.glob("*.npz"))) if files else {}
    for seed in settings.seeds:
        for path in files:
            X, y = load_tabular(path)
            name = path.stem
            entry = run_tabular_seed(X, y, seed, settings, work, name)
            emit(_progress_line(name, entry))
            d = datasets.setdefault(name, {
                "file": path.name, "half": halves.get(name), "n_rows": int(X.shape[0]),
                "n_features": int(X.shape[1]), "n_anomalies": int((y != 0).sum()), "seeds": [],
            })
            d["seeds"].append(entry)
            d["mean"] = summarize_seeds(d["seeds"])
            if checkpoint is not None:
                checkpoint(summarize_tabular(datasets))
    return summarize_tabular(datasets)


def summarize_tabular(datasets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The tabular report: every set, the summary over all of them and over each half."""
    return {"datasets": datasets, "mean": summarize_group(datasets),
            "halves": summarize_halves(datasets)}


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
