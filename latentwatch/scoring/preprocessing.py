"""Preprocessing, the one numpy definition: x_model = clip((x_raw - shift) * scale), per feature.

The manifest stores a `Preprocessing` under `input.preprocessing` and checkpoints store its JSON
fields; export bakes the same arithmetic into the scorer and encoder graphs (the torch twin is
latentwatch.models.preprocessing.Preprocess), so this is the reference for parity checks.
Pure numpy and pydantic: the serving path imports it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

# Standardisation divides by max(std, floor); the floor is relative to the feature's magnitude
# so that constant features do not blow up into huge z-scores at scoring time.
STD_FLOOR_RELATIVE = 1e-3
# Min-max scaling divides by max(max - min, floor): a constant feature maps to 0.
SPAN_FLOOR = 1e-6


class Preprocessing(BaseModel):
    """x_model = clip((x_raw - shift) * scale), per feature; baked into scorer and encoder graphs.

    `scale` images: shift 0, scale 1/max (digits 1/16, MNIST 1/255), clip [0, 1].
    `scale` tabular rows for a Bernoulli decoder: shift = training min, scale = 1/span, clip [0, 1].
    `standardize` tabular rows: shift = training mean, scale = 1/std (std floored), no clip.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["scale", "standardize"]
    shift: list[float]
    scale: list[float]
    clip: tuple[float, float] | None = None

    def apply(self, rows: NDArray) -> NDArray[np.float32]:
        """(N, F) raw rows -> (N, F) float32 rows in model space, as the graphs compute them."""
        shift = np.asarray(self.shift, dtype=np.float32)
        scale = np.asarray(self.scale, dtype=np.float32)
        out = (np.asarray(rows, dtype=np.float32) - shift) * scale
        if self.clip is not None:
            np.clip(out, self.clip[0], self.clip[1], out=out)
        return out

    def magnitude(self, rows: NDArray) -> NDArray[np.float64]:
        """(N, F) raw rows -> |(x_raw - shift) * scale| in float64, before any clipping: how far
        each value lies from the training data in model units (float64, so it never overflows)."""
        shift = np.asarray(self.shift, dtype=np.float64)
        scale = np.asarray(self.scale, dtype=np.float64)
        return np.abs((np.asarray(rows, dtype=np.float64) - shift) * scale)

    def invert(self, model_rows: NDArray) -> NDArray[np.float64]:
        """(N, F) model-space rows -> (N, F) float64 rows in raw units: x = z / scale + shift.

        The exact inverse of `apply` for values `apply` did not clip (up to apply's float32
        rounding). Clipping loses information: every raw value beyond a clip bound maps to the
        bound, so `invert` returns the raw value at the bound (for images: 0 or the pixel max).
        """
        shift = np.asarray(self.shift, dtype=np.float64)
        scale = np.asarray(self.scale, dtype=np.float64)
        return np.asarray(model_rows, dtype=np.float64) / scale + shift


def image_scaling(n_features: int, max_value: float) -> Preprocessing:
    """Images: divide by the pixel maximum and clip to [0, 1] (the Bernoulli decoder's range)."""
    if not max_value > 0:
        raise ValueError(f"max_value must be > 0, got {max_value}")
    return Preprocessing(
        kind="scale",
        shift=[0.0] * n_features,
        scale=[1.0 / float(max_value)] * n_features,
        clip=(0.0, 1.0),
    )


def min_max_scaling(x_train: NDArray[np.floating]) -> Preprocessing:
    """Tabular rows for a Bernoulli decoder: the training split's [min, max] -> [0, 1], clipped."""
    x = np.asarray(x_train)  # (N, F)
    low = x.min(axis=0).astype(np.float64)
    span = np.maximum(x.max(axis=0).astype(np.float64) - low, SPAN_FLOOR)
    return Preprocessing(
        kind="scale", shift=low.tolist(), scale=(1.0 / span).tolist(), clip=(0.0, 1.0)
    )


def standardization(x_train: NDArray[np.floating]) -> Preprocessing:
    """Tabular rows: mean and floored std of the training split only."""
    x = np.asarray(x_train, dtype=np.float64)  # (N, F)
    mean = x.mean(axis=0)
    floor = STD_FLOOR_RELATIVE * np.maximum(np.abs(x).max(axis=0), 1.0)
    std = np.maximum(x.std(axis=0), floor)
    return Preprocessing(
        kind="standardize", shift=mean.tolist(), scale=(1.0 / std).tolist(), clip=None
    )
