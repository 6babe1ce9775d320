"""Preprocessing for training and export: the checkpoint's dict form and the torch twin.

The one definition is latentwatch.scoring.preprocessing (numpy, the manifest's `Preprocessing`).
Checkpoints store its JSON fields as a dict; `Preprocess` computes the same arithmetic in torch
so that export can bake it into the scorer and encoder graphs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from latentwatch.scoring.preprocessing import (
    Preprocessing,
    image_scaling,
    min_max_scaling,
    standardization,
)


def scale_preprocessing(n_features: int, max_value: float) -> dict[str, Any]:
    """Images, as a checkpoint dict: see latentwatch.scoring.preprocessing.image_scaling."""
    return image_scaling(n_features, max_value).model_dump(mode="json")


def min_max_preprocessing(x_train: NDArray[np.floating]) -> dict[str, Any]:
    """Bernoulli rows, as a checkpoint dict: see scoring.preprocessing.min_max_scaling."""
    return min_max_scaling(x_train).model_dump(mode="json")


def standardize_preprocessing(x_train: NDArray[np.floating]) -> dict[str, Any]:
    """Tabular rows, as a checkpoint dict: see latentwatch.scoring.preprocessing.standardization."""
    return standardization(x_train).model_dump(mode="json")


def preprocess(x_raw: NDArray, preprocessing: dict[str, Any]) -> NDArray[np.float32]:
    """(N, F) raw rows -> (N, F) float32 rows in model space, from a checkpoint's dict."""
    pre = Preprocessing.model_validate(preprocessing)
    x = np.asarray(x_raw)
    if x.ndim != 2 or x.shape[1] != len(pre.shift):
        raise ValueError(f"expected rows of {len(pre.shift)} features, got shape {x.shape}")
    return pre.apply(x)


class Preprocess(nn.Module):
    """The torch twin of Preprocessing.apply: x_model = clip((x_raw - shift) * scale)."""

    shift: Tensor  # (F,)
    scale: Tensor  # (F,)

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(preprocessing.shift, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(preprocessing.scale, dtype=torch.float32))
        self.clip = preprocessing.clip

    def forward(self, x: Tensor) -> Tensor:  # (B, F) -> (B, F)
        x = (x - self.shift) * self.scale
        if self.clip is not None:
            x = x.clamp(self.clip[0], self.clip[1])
        return x
