"""Paired sketch -> image data made from the images themselves, no downloads (Pix2Pix).

The sketch of an image is its edge map: the Sobel gradient magnitude of the image scaled to
[0, 1], thresholded, drawn at the image's pixel maximum, so that sketch and image share one
pixel scale (and one Preprocessing). Held-out pairs come from a seeded split of the rows.
Numpy only: the serving side may recompute a sketch with the recipe a checkpoint records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from latentwatch.data.sources import Dataset
from latentwatch.errors import DataError

# Sobel kernels; a unit step (0 -> 1) gives a response of 4, so magnitudes are divided by it.
_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
_SOBEL_STEP = 4.0


@dataclass(frozen=True)
class EdgeRecipe:
    """How a sketch is made: stored in pix2pix checkpoints as `asdict(recipe)`."""

    method: Literal["sobel"] = "sobel"
    # Edge where the normalised gradient magnitude (a unit step: 1.0) reaches this.
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.method != "sobel":
            raise ValueError(f"edge method must be 'sobel', got {self.method!r}")
        if not 0.0 < self.threshold < 2.0:
            raise ValueError(f"edge threshold must be in (0, 2), got {self.threshold}")


def edge_maps(images: NDArray, image_shape: tuple[int, int, int], max_value: float,
              recipe: EdgeRecipe = EdgeRecipe()) -> NDArray[np.float32]:
    """(N, C*H*W) raw images -> (N, C*H*W) sketches in the same units: 0 or max_value."""
    channels, height, width = image_shape
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != channels * height * width or channels != 1:
        raise DataError(f"edge maps take (N, {height * width}) single-channel rows, "
                        f"got shape {x.shape}")
    unit = x.reshape(-1, height, width) / float(max_value)  # (N, H, W) in [0, 1]
    padded = np.pad(unit, ((0, 0), (1, 1), (1, 1)))  # zero border: ink at the edge is an edge
    gx = _correlate(padded, _SOBEL_X, height, width)
    gy = _correlate(padded, _SOBEL_X.T, height, width)
    magnitude = np.hypot(gx, gy) / _SOBEL_STEP
    sketch = (magnitude >= recipe.threshold).astype(np.float32) * np.float32(max_value)
    return sketch.reshape(len(x), channels * height * width)


def _correlate(padded: NDArray[np.float64], kernel: NDArray[np.float64], height: int,
               width: int) -> NDArray[np.float64]:
    out = np.zeros((padded.shape[0], height, width))
    for i in range(3):
        for j in range(3):
            out += kernel[i, j] * padded[:, i : i + height, j : j + width]
    return out


def held_out_split(n_rows: int, held_out_fraction: float,
                   seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Sorted, disjoint (train, held_out) row indices covering range(n_rows); seeded."""
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    n_held = max(1, round(held_out_fraction * n_rows))
    if n_rows - n_held < 1:
        raise ValueError(f"{n_rows} rows leave none for training after {n_held} held out")
    order = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(order[n_held:]).astype(np.int64), np.sort(order[:n_held]).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Pairs:
    """Sketches and their images (raw units, (N, F)), split into train and held-out rows."""

    sketch: NDArray[np.float32]
    image: NDArray[np.float32]
    train: NDArray[np.int64]  # row indices into sketch / image
    held_out: NDArray[np.int64]
    recipe: EdgeRecipe


def make_pairs(dataset: Dataset, recipe: EdgeRecipe = EdgeRecipe(),
               held_out_fraction: float = 0.1, seed: int = 0) -> Pairs:
    """Edge-map pairs of an image dataset (digits, MNIST or Fashion-MNIST IDX files)."""
    if dataset.image_shape is None or dataset.max_value is None:
        raise DataError(f"{dataset.source}: sketch -> image pairs need images, got rows of "
                        f"{dataset.n_features} features")
    sketch = edge_maps(dataset.X, dataset.image_shape, dataset.max_value, recipe)
    train, held_out = held_out_split(dataset.n_rows, held_out_fraction, seed)
    return Pairs(sketch=sketch, image=dataset.X, train=train, held_out=held_out, recipe=recipe)
