"""Preprocessing in NumPy: x_model = clip((x_raw - shift) * scale), per feature.

The dict form has exactly the fields of the manifest's `Preprocessing`; export bakes the
same arithmetic into the ONNX graphs, so this is the reference for parity checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

# Standardisation divides by max(std, floor); the floor is relative to the feature's magnitude
# so that constant features do not blow up into huge z-scores at scoring time.
STD_FLOOR_RELATIVE = 1e-3


def scale_preprocessing(n_features: int, max_value: float) -> dict[str, Any]:
    """Images: divide by the pixel maximum and clip to [0, 1] (the Bernoulli decoder's range)."""
    if not max_value > 0:
        raise ValueError(f"max_value must be > 0, got {max_value}")
    return {
        "kind": "scale",
        "shift": [0.0] * n_features,
        "scale": [1.0 / float(max_value)] * n_features,
        "clip": [0.0, 1.0],
    }


def standardize_preprocessing(x_train: NDArray[np.floating]) -> dict[str, Any]:
    """Tabular rows: mean and floored std of the training split only."""
    x = np.asarray(x_train, dtype=np.float64)  # (N, F)
    mean = x.mean(axis=0)
    floor = STD_FLOOR_RELATIVE * np.maximum(np.abs(x).max(axis=0), 1.0)
    std = np.maximum(x.std(axis=0), floor)
    return {
        "kind": "standardize",
        "shift": mean.tolist(),
        "scale": (1.0 / std).tolist(),
        "clip": None,
    }


def preprocess(x_raw: NDArray, preprocessing: dict[str, Any]) -> NDArray[np.float32]:
    """(N, F) raw rows -> (N, F) float32 rows in model space."""
    x = np.asarray(x_raw, dtype=np.float32)
    shift = np.asarray(preprocessing["shift"], dtype=np.float32)
    scale = np.asarray(preprocessing["scale"], dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != shift.shape[0]:
        raise ValueError(f"expected rows of {shift.shape[0]} features, got shape {x.shape}")
    out = (x - shift) * scale
    clip = preprocessing.get("clip")
    if clip is not None:
        out = np.clip(out, clip[0], clip[1])
    return out.astype(np.float32, copy=False)
