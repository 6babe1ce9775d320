"""Anomaly-detection quality of latentwatch against PyOD's classical detectors.

    python benchmarks/quality.py --adbench-dir DIR --images-dir DIR --json out.json
        [--half selection|report|all] [--datasets A,B] [--seeds N]
        [--max-train-rows N] [--max-test-rows N]
        [--epochs N] [--pyod-vae-epochs N] [--max-image-train-rows N]
        [--max-image-test-rows N] [--image-epochs N] [--n-importance-samples K]
        [--skip-tabular] [--skip-images] [--quick]

Tabular, clean-train protocol (as in the DTE benchmark, ICLR 2024), for every .npz (keys X, y)
in --adbench-dir and every seed: the normal rows are shuffled with the seed; half of them form
the training pool, the other half plus every anomaly form the test set. Pools and test sets
above the caps are subsampled (the test set stratified, keeping its anomaly fraction).

- latentwatch trains a VAE on the pool exactly as `latentwatch train` does: its own seeded split
  carves a calibration slice (never trained or early-stopped on) and a validation slice out of
  the pool. The run is exported to a temporary model repository, and the exported version scores
  the test rows offline (ONNX Runtime, no server): every score kind and its conformal p-values.
- PyOD's KNN, LOF, OCSVM, IForest, PCA, ECOD and VAE, and a DTE-NP-style diffusion-time
  estimator (quality_dte.py), are fitted on the whole pool, standardised with the pool's mean
  and std (see quality_baselines.py, which lists where they differ from PyOD's defaults), and
  score the same test rows.

Halves (quality_halves.py): the sets are split by name into a selection half (every choice
for latentwatch's default is made there) and a report half (the figures README quotes);
--half runs one of them or all. Summaries (quality_summary.py) are given over all the sets run
and over each half present: mean AUROC, AUPR and rank, the best baseline, a Wilcoxon
signed-rank test of the default against it, the gap sets side by side.

Reported per dataset (means over seeds): AUROC and AUPR (average precision) of latentwatch's
default score kind, its neg_elbo and recon_error kinds (every kind in the JSON) and the
baselines; the observed false-alarm rate of the default kind's p-values on the test normals at
alpha in {0.01, 0.05, 0.1}, and the observed false discovery rate of Benjamini-Hochberg at
q = 0.1 over the whole test set.

Images: Fashion-MNIST -> MNIST and MNIST -> Fashion-MNIST: train on the first's training split
(conv VAE, Bernoulli decoder), score the first's test split (normal) and the other's test split
(outliers); AUROC of every score kind. One seed (the first).

Prints the tables and writes every figure to the JSON file. This file is the command line; the
rest lives beside it: quality_settings (caps, --quick), quality_split (the clean-train split),
quality_metrics (AUROC, AUPR, false alarms, BH), quality_latentwatch (train, export, score),
quality_tabular, quality_images, quality_report (tables, summary, versions), quality_baselines.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from quality_baselines import BASELINES, DEFAULT_PYOD_VAE_EPOCHS, deviations, pyod_available
from quality_halves import HALF_CHOICES, HALVES
from quality_images import run_images
from quality_metrics import ALPHAS, FDR_LEVEL
from quality_report import (
    calibration_table,
    group_lines,
    json_safe,
    machine,
    metric_table,
    package_versions,
    role_command,
    summary_lines,
)
from quality_settings import (
    DEFAULT_IMAGE_EPOCHS,
    DEFAULT_MAX_TEST_ROWS,
    DEFAULT_MAX_TRAIN_ROWS,
    DEFAULT_N_IMPORTANCE_SAMPLES,
    resolve_settings,
)
from quality_tabular import run_tabular, tabular_files

logger = logging.getLogger("quality")


def _emit(line: str) -> None:
    print(line, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, type=Path, help="file to write the figures to")
    parser.add_argument("--adbench-dir", type=Path, default=None,
                        help="directory of .npz files with keys X, y (every one is run)")
    parser.add_argument("--images-dir", type=Path, default=None,
                        help="directory holding mnist/ and fashion-mnist/ IDX .gz files")
    parser.add_argument("--half", choices=HALF_CHOICES, default="all",
                        help="which fixed half of the sets to run: selection (choose the "
                             "default's settings there), report (the figures to quote) or all "
                             "(default all)")
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
    parser.add_argument("--n-importance-samples", type=int,
                        default=DEFAULT_N_IMPORTANCE_SAMPLES,
                        help="K, the latent draws latentwatch's exported scorer decodes per row "
                             f"(default {DEFAULT_N_IMPORTANCE_SAMPLES}, as `latentwatch train`); "
                             "run e.g. --half selection with K in 1, 4, 8, 16 to measure its cost")
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


def _write(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")


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
        "n_importance_samples": settings.n_importance_samples,
    }
    _emit("caps (None = no cap / default): "
          + ", ".join(f"{k}={v}" for k, v in caps.items()) + f"; seeds {list(settings.seeds)}")
    started_s = time.perf_counter()
    report: dict[str, Any] = {
        "command": role_command("benchmarks/quality.py",
                                argv if argv is not None else sys.argv[1:]),
        "half": args.half,
        "protocol": {
            "tabular": "clean-train (DTE, ICLR 2024): per seed, normals shuffled; 50% -> pool, "
                       "the other 50% + all anomalies -> test; pool and test subsampled above "
                       "the caps (test stratified)",
            "latentwatch": "VAE trained on the pool with `latentwatch train` defaults (its own "
                           "seeded split carves calibration and validation slices from the "
                           "pool), exported, scored offline from the exported version",
            "baselines": "PyOD defaults, fitted on the whole pool standardised with the pool's "
                         "mean/std, except the deviations listed; dte_np written here",
            "halves": "set names (ADBench number prefix dropped) sorted case-insensitively, "
                      "taken alternately: 1st, 3rd, ... = selection; 2nd, 4th, ... = report",
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
        "deviations": deviations(settings.pyod_vae_epochs),
    }
    with tempfile.TemporaryDirectory(prefix="latentwatch-quality-") as tmp:
        work = Path(tmp)
        if not args.skip_tabular:
            wanted = args.datasets.split(",") if args.datasets else None
            files = tabular_files(args.adbench_dir, wanted, args.quick, args.half)
            _emit(f"tabular ({args.half}): {len(files)} sets x {len(settings.seeds)} seeds")

            def checkpoint(tabular: dict[str, Any]) -> None:
                _write({**report, "tabular": tabular, "partial": True,
                        "total_s": time.perf_counter() - started_s}, args.json)

            report["tabular"] = run_tabular(files, settings, work / "tabular", _emit,
                                            checkpoint)
        if not args.skip_images:
            report["images"] = run_images(args.images_dir, settings, work / "images", _emit)
    report["versions"] = package_versions()
    report["machine"] = machine()
    report["total_s"] = time.perf_counter() - started_s
    report["cpu_s"] = time.process_time()
    _write(report, args.json)
    if "tabular" in report:
        _emit("\n" + metric_table(report["tabular"], "auroc"))
        _emit("\n" + metric_table(report["tabular"], "aupr"))
        _emit("\n" + calibration_table(report["tabular"]))
        for half in HALVES:
            if half in report["tabular"]["halves"]:
                _emit(f"\n{half} half:")
                for line in group_lines(report["tabular"]["halves"][half]):
                    _emit(line)
        _emit("\nall sets run:")
        for line in group_lines(report["tabular"]["mean"]):
            _emit(line)
    _emit("")
    for line in summary_lines(report):
        _emit(line)
    _emit(f"wrote {args.json}; total {report['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
