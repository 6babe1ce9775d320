"""Seeded row splits: calibration (never trained on), validation (early stopping), train."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, eq=False)
class Split:
    train: NDArray[np.int64]  # sorted row indices
    validation: NDArray[np.int64]
    calibration: NDArray[np.int64]

    def describe(self) -> dict[str, int]:
        return {
            "n_train": int(self.train.size),
            "n_validation": int(self.validation.size),
            "n_calibration": int(self.calibration.size),
        }


def split_rows(
    n_rows: int, calibration_fraction: float, validation_fraction: float, seed: int
) -> Split:
    """Disjoint index sets covering range(n_rows); the same seed gives the same split."""
    if not 0.0 < calibration_fraction < 1.0:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    n_calibration = max(1, round(calibration_fraction * n_rows))
    n_validation = max(1, round(validation_fraction * n_rows)) if validation_fraction > 0 else 0
    if n_rows - n_calibration - n_validation < 1:
        raise ValueError(
            f"{n_rows} rows leave none for training after {n_calibration} calibration and "
            f"{n_validation} validation rows"
        )
    order = np.random.default_rng(seed).permutation(n_rows)
    calibration = order[:n_calibration]
    validation = order[n_calibration : n_calibration + n_validation]
    train = order[n_calibration + n_validation :]
    return Split(
        train=np.sort(train).astype(np.int64),
        validation=np.sort(validation).astype(np.int64),
        calibration=np.sort(calibration).astype(np.int64),
    )
