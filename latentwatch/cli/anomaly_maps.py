"""`latentwatch score --anomaly-maps DIR`: one PNG per image row, the image beside the heat map
of its pixels' contributions (standardised reconstruction NLL, latentwatch.scoring.explain).

The heat scale is the same for every image: 0 (what normal rows show, or less) is black and
HOT_SD standard deviations or more is white, through red and yellow, so maps compare by eye.
For images of several channels a pixel's heat is its largest channel's.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput
from latentwatch.reports.charts import png_bytes
from latentwatch.repository.catalog import ModelInfo
from latentwatch.scoring.explain import Explanations

HOT_SD = 10.0
MIN_SIDE_PX = 64  # each image is scaled up (nearest neighbour) to at least this
GAP_PX = 2


def heat_rgb(heat: NDArray) -> NDArray[np.uint8]:
    """(H, W) contributions -> (H, W, 3): black, red, yellow, white from 0 to HOT_SD."""
    t = np.clip(np.asarray(heat, dtype=np.float64) / HOT_SD, 0.0, 1.0) * 3.0
    rgb = np.stack([np.clip(t, 0, 1), np.clip(t - 1, 0, 1), np.clip(t - 2, 0, 1)], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def _grey(image: NDArray) -> NDArray[np.uint8]:
    """(C, H, W) raw pixels -> (H, W, 3), grey (the mean channel) or RGB for 3 channels."""
    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    planes = scaled.transpose(1, 2, 0) if values.shape[0] == 3 else np.repeat(
        scaled.mean(axis=0)[..., None], 3, axis=-1)
    return np.round(planes * 255).astype(np.uint8)


def anomaly_map_png(image: NDArray, contributions: NDArray) -> bytes:
    """(C, H, W) raw image and its (C, H, W) contributions -> PNG: image | heat map."""
    heat = heat_rgb(np.asarray(contributions).max(axis=0))
    grey = _grey(image)
    height, width = heat.shape[:2]
    scale = max(1, math.ceil(MIN_SIDE_PX / max(height, width)))
    canvas = np.full((height * scale, 2 * width * scale + GAP_PX, 3), 255, dtype=np.uint8)
    for offset, plane in ((0, grey), (width * scale + GAP_PX, heat)):
        canvas[:, offset : offset + width * scale] = plane.repeat(scale, 0).repeat(scale, 1)
    return png_bytes(canvas)


class AnomalyMaps:
    """Writes `<dir>/row-<n>.png` for each image row, n its 0-based row number in the input."""

    def __init__(self, directory: Path, image_shape: tuple[int, ...]) -> None:
        self.directory = directory
        self.image_shape = image_shape
        self.written = 0
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, first_row: int, rows: NDArray, explained: Explanations) -> None:
        """Rows (n, F) raw and their explanations over every feature (k = F)."""
        n_features = math.prod(self.image_shape)
        dense = explained.dense(n_features)  # every feature explained: no NaN
        for i in range(len(explained)):
            png = anomaly_map_png(rows[i].reshape(self.image_shape),
                                  dense[i].reshape(self.image_shape))
            (self.directory / f"row-{first_row + i:06d}.png").write_bytes(png)
            self.written += 1


def anomaly_maps(directory: Path | None, info: ModelInfo) -> AnomalyMaps | None:
    """The maps writer for --anomaly-maps (None without it); InvalidInput for a tabular model."""
    if directory is None:
        return None
    if not info.image_shape:
        raise InvalidInput(f"--anomaly-maps: model {info.name} version {info.version} takes "
                           "rows, not images; use --explain for the features of rows")
    return AnomalyMaps(directory, tuple(info.image_shape))
