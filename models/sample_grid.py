"""Sample grids: what a person looks at after each epoch of adversarial training.

gan: 8 x 8 samples from one fixed z (the same every epoch, so epochs compare); cgan: one row
per class, 8 samples each; pix2pix: 8 rows of held-out sketch | translation | true image.
Grey PNGs (latentwatch.reports.charts.png_bytes) with a 1-pixel grey gutter, scaled up to be
readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray

from latentwatch.models.gan import GAN
from latentwatch.models.pix2pix import Pix2Pix
from latentwatch.models.run_dir import sample_grid_path
from latentwatch.reports.charts import png_bytes

if TYPE_CHECKING:
    from latentwatch.models.gan_training import _Data

GRID_COLUMNS = 8
GUTTER = 128  # grey between tiles
MIN_TILE_PIXELS = 32  # tiles are scaled up by an integer factor to at least this size


def grid_pixels(tiles: NDArray[np.floating], columns: int) -> NDArray[np.uint8]:
    """(N, H, W) tiles in [0, 1] -> one (rows*(H+1)+1, columns*(W+1)+1) uint8 image."""
    n, height, width = tiles.shape
    factor = max(1, -(-MIN_TILE_PIXELS // max(height, width)))
    tiles = np.repeat(np.repeat(np.clip(tiles, 0, 1), factor, axis=1), factor, axis=2)
    height, width = height * factor, width * factor
    rows = -(-n // columns)
    out = np.full((rows * (height + 1) + 1, columns * (width + 1) + 1), GUTTER, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[1 + r * (height + 1):(r + 1) * (height + 1),
            1 + c * (width + 1):(c + 1) * (width + 1)] = np.round(tile * 255)
    return out


@torch.no_grad()
def model_tiles(model: GAN | Pix2Pix, data: _Data, seed: int) -> tuple[NDArray, int]:
    """The tiles (N, H, W) in model space [0, 1] and the grid's column count."""
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, Pix2Pix):
            assert data.cond_held is not None
            sketch, true = data.cond_held[:GRID_COLUMNS], data.x_held[:GRID_COLUMNS]
            triplets = torch.stack([sketch, model.generator(sketch), true], dim=1)  # (8, 3, ...)
            return triplets.reshape(-1, *sketch.shape[2:]).numpy(), 3
        fixed = torch.Generator().manual_seed(seed)
        labels = None
        if model.config.n_classes is not None:
            labels = torch.arange(model.config.n_classes).repeat_interleave(GRID_COLUMNS)
        n = len(labels) if labels is not None else GRID_COLUMNS * GRID_COLUMNS
        samples = model.sample(n, fixed, labels)
        return samples.reshape(n, *samples.shape[2:]).numpy(), GRID_COLUMNS
    finally:
        model.train(was_training)


def write_sample_grid(out: Path, epoch: int, model: GAN | Pix2Pix, data: _Data,
                      seed: int) -> Path:
    tiles, columns = model_tiles(model, data, seed)
    path = sample_grid_path(out, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(grid_pixels(tiles, columns)))
    return path
