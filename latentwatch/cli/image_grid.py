"""Labelled image grids as PNG: what `latentwatch generate`, `traverse` and `translate` write.

Tiles are images (C, H, W) (grey, or RGB for 3 channels; other counts show the first channel)
or tabular rows (F,), drawn as a strip of F grey cells. One grey scale spans the whole grid, so
tiles compare by eye. Labels (row names on the left, column names on top) use a 3x5 pixel font
of digits, a few signs and capital letters; a character it lacks is drawn as a blank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from latentwatch.reports.charts import png_bytes

GAP_PX = 2  # between tiles
MIN_TILE_PX = 32  # tiles are scaled up (nearest neighbour) to at least this
FONT_SCALE = 2  # each font pixel as 2x2 image pixels
BACKGROUND = 255
INK = 0

# 3x5 glyphs, rows top to bottom, "#" inked.
_GLYPHS = {
    "0": "###,#.#,#.#,#.#,###", "1": ".#.,##.,.#.,.#.,###", "2": "###,..#,###,#..,###",
    "3": "###,..#,.##,..#,###", "4": "#.#,#.#,###,..#,..#", "5": "###,#..,###,..#,###",
    "6": "###,#..,###,#.#,###", "7": "###,..#,.#.,.#.,.#.", "8": "###,#.#,###,#.#,###",
    "9": "###,#.#,###,..#,###", "-": "...,...,###,...,...", ".": "...,...,...,...,.#.",
    "+": "...,.#.,###,.#.,...", "=": "...,###,...,###,...", ":": "...,.#.,...,.#.,...",
    "A": ".#.,#.#,###,#.#,#.#", "B": "##.,#.#,##.,#.#,##.", "C": "###,#..,#..,#..,###",
    "D": "##.,#.#,#.#,#.#,##.", "E": "###,#..,##.,#..,###", "F": "###,#..,##.,#..,#..",
    "G": "###,#..,#.#,#.#,###", "H": "#.#,#.#,###,#.#,#.#", "I": "###,.#.,.#.,.#.,###",
    "J": "..#,..#,..#,#.#,###", "K": "#.#,#.#,##.,#.#,#.#", "L": "#..,#..,#..,#..,###",
    "M": "#.#,###,###,#.#,#.#", "N": "##.,#.#,#.#,#.#,#.#", "O": "###,#.#,#.#,#.#,###",
    "P": "###,#.#,###,#..,#..", "Q": "###,#.#,#.#,###,..#", "R": "##.,#.#,##.,#.#,#.#",
    "S": "###,#..,###,..#,###", "T": "###,.#.,.#.,.#.,.#.", "U": "#.#,#.#,#.#,#.#,###",
    "V": "#.#,#.#,#.#,#.#,.#.", "W": "#.#,#.#,###,###,#.#", "X": "#.#,#.#,.#.,#.#,#.#",
    "Y": "#.#,#.#,.#.,.#.,.#.", "Z": "###,..#,.#.,#..,###",
}
GLYPH_W, GLYPH_H = 3, 5


def _glyph(char: str) -> NDArray[np.bool_]:
    rows = _GLYPHS.get(char.upper(), "...,...,...,...,...").split(",")
    return np.array([[c == "#" for c in row] for row in rows], dtype=bool)


def text_pixels(text: str) -> NDArray[np.bool_]:
    """(5 * FONT_SCALE, width) mask of `text`, one blank column between characters."""
    if not text:
        return np.zeros((GLYPH_H * FONT_SCALE, 0), dtype=bool)
    parts = []
    for char in text:
        parts += [_glyph(char), np.zeros((GLYPH_H, 1), dtype=bool)]
    mask = np.concatenate(parts[:-1], axis=1)
    return mask.repeat(FONT_SCALE, axis=0).repeat(FONT_SCALE, axis=1)


def _text_width(text: str) -> int:
    return text_pixels(text).shape[1]


def _as_planes(tiles: NDArray) -> NDArray[np.float64]:
    """(R, K, ...) tiles -> (R, K, H, W) or (R, K, H, W, 3) planes."""
    t = np.asarray(tiles, dtype=np.float64)
    if t.ndim == 3:  # tabular rows: a strip of cells, one per feature
        return t[:, :, None, :]
    if t.ndim == 5:
        return t.transpose(0, 1, 3, 4, 2) if t.shape[2] == 3 else t[:, :, 0]
    if t.ndim == 4:
        return t  # (R, K, H, W) single-channel images
    raise ValueError(f"tiles of shape {list(t.shape)}: expected (rows, columns, *sample_shape)")


def grid_png(
    tiles: NDArray,
    row_labels: Sequence[str] = (),
    column_labels: Sequence[str] = (),
    value_range: tuple[float, float] | None = None,
) -> bytes:
    """(R, K, *sample_shape) tiles -> a PNG of R rows and K columns, labelled.

    `value_range` (low, high) maps to black..white; None uses the tiles' own min and max. NaN
    tiles (a grid's unused places) stay background.
    """
    planes = _as_planes(tiles)
    n_rows, n_cols, height, width = planes.shape[:4]
    finite = planes[np.isfinite(planes)]
    low, high = value_range if value_range is not None else (
        (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0))
    span = high - low if high > low else 1.0
    grey = np.round(np.clip((planes - low) / span, 0.0, 1.0) * 255)
    grey = np.where(np.isfinite(planes), grey, BACKGROUND).astype(np.uint8)
    scale = max(1, math.ceil(MIN_TILE_PX / max(height, width)))
    tile_h, tile_w = height * scale, width * scale
    text_h = GLYPH_H * FONT_SCALE
    left = max((_text_width(s) for s in row_labels), default=0)
    left += GAP_PX * 2 if left else GAP_PX
    top = text_h + GAP_PX * 2 if column_labels else GAP_PX
    col_w = max(tile_w, max((_text_width(s) for s in column_labels), default=0))
    out_h = top + n_rows * (tile_h + GAP_PX)
    out_w = left + n_cols * (col_w + GAP_PX)
    rgb = planes.ndim == 5
    canvas = np.full((out_h, out_w, 3) if rgb else (out_h, out_w), BACKGROUND, dtype=np.uint8)
    for r in range(n_rows):
        y = top + r * (tile_h + GAP_PX)
        for k in range(n_cols):
            x = left + k * (col_w + GAP_PX) + (col_w - tile_w) // 2
            tile = grey[r, k].repeat(scale, axis=0).repeat(scale, axis=1)
            canvas[y : y + tile_h, x : x + tile_w] = tile
        if r < len(row_labels):
            _draw(canvas, row_labels[r], y + (tile_h - text_h) // 2, GAP_PX)
    for k, label in enumerate(column_labels[:n_cols]):
        x = left + k * (col_w + GAP_PX) + (col_w - _text_width(label)) // 2
        _draw(canvas, label, GAP_PX, x)
    return png_bytes(canvas)


def _draw(canvas: NDArray[np.uint8], text: str, y: int, x: int) -> None:
    mask = text_pixels(text)
    h = min(mask.shape[0], canvas.shape[0] - y)
    w = min(mask.shape[1], canvas.shape[1] - x)
    if h > 0 and w > 0:
        canvas[y : y + h, x : x + w][mask[:h, :w]] = INK


def as_grid(samples: NDArray, n_columns: int) -> NDArray[np.float64]:
    """(n, *shape) samples -> (ceil(n / K), K, *shape), unused places NaN."""
    n = samples.shape[0]
    n_rows = max(1, math.ceil(n / n_columns))
    grid = np.full((n_rows * n_columns, *samples.shape[1:]), np.nan)
    grid[:n] = samples
    return grid.reshape(n_rows, n_columns, *samples.shape[1:])


def number_label(value: float) -> str:
    """A short label for a number: 3, -1.5, 0.25."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
