"""What an export reads from a training run: the checkpoint and the rows the run kept."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import nn

from latentwatch.export.errors import ExportError
from latentwatch.families import family
from latentwatch.models.run_dir import (
    CALIBRATION_ROWS_FILE,
    CHECKPOINT_FILE,
    TRAIN_ROWS_FILE,
    VALIDATION_ROWS_FILE,
)
from latentwatch.repository.manifest import Provenance
from latentwatch.scoring.preprocessing import Preprocessing
from latentwatch.scoring.second_stage import KIND as SECOND_STAGE_KIND

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportInputs:
    """Everything an export needs from a training run, already loaded."""

    model: nn.Module
    model_kind: str
    decoder: str
    beta: float
    n_features: int
    latent_dim: int
    n_importance_samples: int
    image_shape: list[int] | None
    preprocessing: Preprocessing
    provenance: Provenance
    calibration_rows: NDArray[np.float32]  # (n, F) raw rows, held out from training
    calibration_split: str  # in words
    # Raw training and validation rows for the second stage; None for runs that kept none.
    train_rows: NDArray[np.float32] | None = None
    validation_rows: NDArray[np.float32] | None = None
    feature_names: list[str] | None = None  # the training data's column names, when it had them
    # Rows the second stage's kNN reference keeps; None: reference_rows_for(n_features).
    n_reference_rows: int | None = None


def load_run(run_dir: Path) -> ExportInputs:
    """Read a training run directory: the checkpoint and its held-out calibration rows."""
    from latentwatch.models.checkpoint import load_checkpoint

    checkpoint_path = run_dir / CHECKPOINT_FILE
    if not checkpoint_path.is_file():
        raise ExportError(f"{run_dir}: no {CHECKPOINT_FILE}; is this a training run directory?")
    model, checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint.config
    provenance = Provenance(**checkpoint.provenance)
    rows = load_rows(run_dir / CALIBRATION_ROWS_FILE, config.n_features)
    train_rows = validation_rows = None
    if (run_dir / TRAIN_ROWS_FILE).is_file():
        train_rows = load_rows(run_dir / TRAIN_ROWS_FILE, config.n_features)
        if (run_dir / VALIDATION_ROWS_FILE).is_file():
            validation_rows = load_rows(run_dir / VALIDATION_ROWS_FILE, config.n_features)
    else:
        logger.warning(
            "%s: no %s (a run from an older latentwatch): exporting without the %s score",
            run_dir, TRAIN_ROWS_FILE, SECOND_STAGE_KIND,
        )
    draws = family(config.kind).draws_importance_samples
    return ExportInputs(
        model=model,
        model_kind=config.kind,
        decoder=config.decoder,
        beta=float(config.beta),
        n_features=config.n_features,
        latent_dim=config.latent_dim,
        # A scorer that draws no samples (the AE's) says so in the manifest with 0.
        n_importance_samples=config.n_importance_samples if draws else 0,
        image_shape=list(config.image_shape) if config.image_shape is not None else None,
        preprocessing=Preprocessing(**checkpoint.preprocessing),
        provenance=provenance,
        calibration_rows=rows,
        calibration_split=describe_split(checkpoint.split, provenance, len(rows)),
        train_rows=train_rows,
        validation_rows=validation_rows,
        feature_names=provenance.feature_names,
    )


def run_model_kind(run_dir: Path) -> str:
    """The model kind of a training run, read from its checkpoint: generator families write it
    at the top level ("kind"), the scorer families inside "config"."""
    import torch

    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise ExportError(f"{run_dir}: no {CHECKPOINT_FILE}; is this a training run directory?")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        kind = payload.get("kind") or payload["config"]["kind"]
    except Exception as err:  # torch raises many types for foreign or corrupt files
        raise ExportError(f"{path}: not a readable checkpoint ({err})") from err
    if not isinstance(kind, str):
        raise ExportError(f"{path}: the checkpoint names no model kind")
    return kind


def check_inputs(inputs: ExportInputs) -> None:
    """ExportError when the loaded inputs disagree with each other."""
    pre = inputs.preprocessing
    if len(pre.shift) != inputs.n_features or len(pre.scale) != inputs.n_features:
        raise ExportError(
            f"preprocessing has {len(pre.shift)} shifts and {len(pre.scale)} scales "
            f"for {inputs.n_features} features"
        )
    draws = family(inputs.model_kind).draws_importance_samples
    if draws and inputs.n_importance_samples < 1:
        raise ExportError(f"n_importance_samples must be >= 1, got {inputs.n_importance_samples}")
    if inputs.n_reference_rows is not None and inputs.n_reference_rows < 1:
        raise ExportError(f"n_reference_rows must be >= 1, got {inputs.n_reference_rows}")
    shape = inputs.calibration_rows.shape
    if len(shape) != 2 or shape[1] != inputs.n_features or shape[0] == 0:
        raise ExportError(
            f"calibration rows have shape {shape}, expected (n > 0, {inputs.n_features})"
        )


def describe_split(split: dict[str, Any], provenance: Provenance, n_rows: int) -> str:
    """How the calibration rows were held out, in words, from what the training run recorded."""
    words = f"{n_rows} rows of {provenance.data} held out at random before training"
    fraction = split.get("calibration_fraction")
    if isinstance(fraction, int | float) and not isinstance(fraction, bool):
        words += f" (fraction {fraction:g}"
        words += f", seed {split['seed']})" if "seed" in split else ")"
    else:
        words += f" (training seed {provenance.seed})"
    return words + "; never used for training or early stopping"


def load_rows(
    path: Path, n_features: int, what: str = "held-out calibration rows"
) -> NDArray[np.float32]:
    """(n > 0, n_features) finite float32 rows a run saved; ExportError naming `what`."""
    if not path.is_file():
        raise ExportError(f"{path}: missing; the run has no {what}")
    try:
        rows = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ExportError(f"{path}: not a plain numeric .npy file: {err}") from err
    if rows.ndim != 2 or rows.shape[1] != n_features or len(rows) == 0:
        raise ExportError(f"{path}: shape {rows.shape}, expected (n > 0, {n_features})")
    rows = rows.astype(np.float32, copy=False)
    if not np.isfinite(rows).all():
        raise ExportError(f"{path}: contains NaN or Inf")
    return np.ascontiguousarray(rows)
