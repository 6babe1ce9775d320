"""File names of a training run directory (what `latentwatch train` writes, export reads).

Not the model repository (latentwatch.repository.layout): a run directory holds torch weights
and raw rows, and export turns it into one version of a model.

    RUN_DIR/checkpoint.pt          weights, configs, preprocessing, provenance, history
    RUN_DIR/calibration_rows.npy   (n_calibration, F) float32 raw rows, never trained on
    RUN_DIR/train_rows.npy         raw training rows kept for export's second stage
    RUN_DIR/validation_rows.npy    raw validation rows kept for export's second stage
    RUN_DIR/splits.npz             row indices of train / validation / calibration (int64)
    RUN_DIR/metrics.json           per-epoch losses, best epoch, the resolved configs
    RUN_DIR/samples/epoch_001.png  adversarial runs: a sample grid per epoch
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_FILE = "checkpoint.pt"
CALIBRATION_ROWS_FILE = "calibration_rows.npy"
SPLITS_FILE = "splits.npz"
# Raw training and validation rows for export's second stage (kNN reference, standardisation).
TRAIN_ROWS_FILE = "train_rows.npy"
VALIDATION_ROWS_FILE = "validation_rows.npy"
METRICS_FILE = "metrics.json"
# Adversarial runs (models/gan_training.py): one sample grid PNG per epoch.
SAMPLES_DIR = "samples"


def sample_grid_path(run_dir: Path, epoch: int) -> Path:
    """RUN_DIR/samples/epoch_007.png"""
    return Path(run_dir) / SAMPLES_DIR / f"epoch_{epoch:03d}.png"
