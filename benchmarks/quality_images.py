"""The image half of benchmarks/quality.py: Fashion-MNIST <-> MNIST, AUROC of every kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from quality_latentwatch import latentwatch_scores
from quality_metrics import calibration_metrics, detection_metrics
from quality_settings import Settings

IMAGE_PAIRS = (("fashion-mnist", "mnist"), ("mnist", "fashion-mnist"))
IMAGE_TRAIN_FILE = "train-images-idx3-ubyte.gz"
IMAGE_TEST_FILE = "t10k-images-idx3-ubyte.gz"


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
                                max_rows=settings.max_image_train_rows,
                                n_importance_samples=settings.n_importance_samples)
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
