"""Inline SVG charts and a small PNG encoder for the HTML bias report (bias_html).

Plain strings, no plotting library: the page must open anywhere without fetching anything.
"""

from __future__ import annotations

import base64
import html
import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.accumulator import DISPARITY_BAND, BiasReport, GroupStats
from latentwatch.bias.drift import PSI_SIGNIFICANT
from latentwatch.reports.summary import fmt_count, fmt_num, fmt_percent, group_label

MAX_DIMENSION_PANELS = 32
WEIGHT_BINS = 40
BLUE, RED, GREEN_BAND, INK, MUTED = "#2563eb", "#dc2626", "#dcfce7", "#1f2937", "#6b7280"


# --- small building blocks -----------------------------------------------------------------------


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def png_bytes(pixels: NDArray[np.uint8]) -> bytes:
    """A minimal PNG: (H, W) grey or (H, W, 3) RGB, 8 bits, one IDAT chunk."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    colour_type = 0 if pixels.ndim == 2 else 2
    rows = pixels.reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # filter 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)) + chunk(b"IEND", b""))


def image_uri(row: NDArray, image_shape: Sequence[int]) -> str:
    """A row of [0, 1] intensities as a PNG data URI; channels other than 1 or 3 show the first."""
    channels, height, width = image_shape
    planes = np.clip(np.asarray(row, dtype=np.float64), 0, 1).reshape(channels, height, width)
    pixels = planes.transpose(1, 2, 0) if channels == 3 else planes[0]
    data = png_bytes(np.round(pixels * 255).astype(np.uint8))
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{esc(label)}">{"".join(body)}</svg>')


def _text(x: float, y: float, text: str, *, anchor: str = "middle", size: float = 11,
          colour: str = MUTED, weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{colour}" font-weight="{weight}">{esc(text)}</text>')


def _line(x1: float, y1: float, x2: float, y2: float, colour: str = MUTED, dash: str = "",
          width: float = 1) -> str:
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
            f'stroke-width="{width}"{extra}/>')


def _rect(x: float, y: float, w: float, h: float, fill: str, extra: str = "") -> str:
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" '
            f'fill="{fill}"{extra}/>')


def _tick(value: float) -> str:
    return f"{value:.3g}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """log10 positions of 1, 2 and 5 times powers of ten in [lo, hi]: fewer over wide ranges."""
    span = hi - lo
    if span > 10:
        step = int(math.ceil(span / 10))
        return [float(k) for k in range(math.ceil(lo), math.floor(hi) + 1) if k % step == 0]
    multiples = (1, 2, 5) if span < 3 else (1,)
    return [k + math.log10(m) for k in range(math.floor(lo), math.ceil(hi) + 1)
            for m in multiples if lo <= k + math.log10(m) <= hi]


def nice_ticks(top: int, most: int = 5) -> list[int]:
    """Round counts (1, 2 or 5 times a power of ten apart) from the step up to `top`."""
    raw = max(top / most, 1.0)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return list(range(int(step), top + 1, int(step)))


# --- charts --------------------------------------------------------------------------------------


def group_chart(groups: Sequence[GroupStats]) -> str:
    """Representation ratio per group on a log axis, bars from 1, the band shaded, the ratio's
    interval as a whisker; red: flagged (significant and outside the band)."""
    low, high = DISPARITY_BAND
    ratios = [g.representation_ratio for g in groups]
    ratios += [r for g in groups for r in (g.ratio_low, g.ratio_high) if math.isfinite(r)]
    positive = [r for r in ratios if r > 0]
    lo = max(min([0.25, *(r / 1.3 for r in positive)]), 1 / 64)
    hi = min(max([4.0, *(r * 1.3 for r in positive)]), 64.0)
    # `gutter`: room for the figure at the end of the smallest bar, clear of the labels.
    left, gutter, right, row_h, top = 230, 56, 70, 24, 28
    width = 1080
    height = top + row_h * len(groups) + 64
    plot_w = width - left - gutter - right

    def x_of(ratio: float) -> float:
        r = min(max(ratio, lo), hi)
        return (left + gutter
                + plot_w * (math.log(r) - math.log(lo)) / (math.log(hi) - math.log(lo)))

    bottom = top + row_h * len(groups)
    body = [_rect(x_of(low), top - 6, x_of(high) - x_of(low), bottom - top + 6, GREEN_BAND),
            _text(x_of(1), top - 12, f"fair band [{low:g}, {high:g}]", size=11)]
    for tick in (0.125, 0.25, 0.5, 0.8, 1, 1.25, 2, 4, 8, 16, 32):
        if lo <= tick <= hi:
            body.append(_line(x_of(tick), top - 4, x_of(tick), bottom, "#e5e7eb"))
            body.append(_text(x_of(tick), bottom + 16, f"{tick:g}"))
    for i, group in enumerate(groups):
        y = top + i * row_h
        ratio = group.representation_ratio
        colour = RED if group.flagged else BLUE
        x0, x1 = sorted((x_of(1.0), x_of(ratio)))
        body.append(_rect(x0, y + 4, max(x1 - x0, 1.5), row_h - 8, colour, ' rx="2"'))
        if math.isfinite(group.ratio_low) and math.isfinite(group.ratio_high):
            w0, w1 = x_of(group.ratio_low), x_of(group.ratio_high)
            mid = y + row_h / 2
            body += [_line(w0, mid, w1, mid, INK, width=1.5),
                     _line(w0, mid - 5, w0, mid + 5, INK, width=1.5),
                     _line(w1, mid - 5, w1, mid + 5, INK, width=1.5)]
            x0, x1 = min(x0, w0), max(x1, w1)
        label = f"{group_label(group)}  (n={fmt_count(group.n_rows)}, {fmt_percent(group.share)})"
        body.append(_text(left - 8, y + row_h / 2 + 4, label, anchor="end", size=12.5,
                          colour=INK))
        # The figure sits at the bar's free end: left of it below 1, right of it above.
        below = ratio < 1.0
        body.append(_text(x0 - 6 if below else x1 + 6, y + row_h / 2 + 4, fmt_num(ratio),
                          anchor="end" if below else "start", size=12, colour=colour,
                          weight="600" if group.flagged else "normal"))
    body.append(_line(x_of(1), top - 6, x_of(1), bottom, INK, width=1.5))
    body.append(_text(left + gutter + plot_w / 2, bottom + 36,
                      "representation ratio (log scale)", colour=INK, size=12))
    body.append(_text(x_of(1.0) - 8, bottom + 54,
                      "\u2190 less of the group in the sparse regions", anchor="end"))
    body.append(_text(x_of(1.0) + 8, bottom + 54,
                      "more of the group in the sparse regions \u2192", anchor="start"))
    return _svg(width, height, body, "representation ratio per group")


def weight_chart(weight: NDArray) -> tuple[str, int]:
    """Histogram of log10 resampling weight; returns (svg, rows with weight 0)."""
    positive = weight[weight > 0]
    zeros = int(weight.shape[0] - positive.shape[0])
    width, height, left, bottom_pad, top = 1080, 260, 64, 46, 14
    plot_w, plot_h = width - left - 20, height - top - bottom_pad
    if positive.size == 0:
        return _svg(width, 40, [_text(20, 24, "every weight underflowed to 0", anchor="start")],
                    "weights"), zeros
    logs = np.log10(positive)
    lo, hi = float(logs.min()), float(logs.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(logs, bins=WEIGHT_BINS, range=(lo, hi))
    top_count = max(int(counts.max()), 1)

    def x_of(v: float) -> float:
        return left + plot_w * (v - lo) / (hi - lo)

    def y_of(c: float) -> float:
        return top + plot_h * (1 - c / top_count)

    body = []
    for c in nice_ticks(top_count):
        body.append(_line(left, y_of(c), left + plot_w, y_of(c), "#eef0f3"))
        body.append(_text(left - 6, y_of(c) + 4, fmt_count(c), anchor="end"))
    for count, a, b in zip(counts.tolist(), edges[:-1], edges[1:], strict=True):
        body.append(_rect(x_of(a) + 0.5, y_of(count), x_of(b) - x_of(a) - 1, y_of(0) - y_of(count),
                          BLUE))
    for value in log_ticks(lo, hi):
        body.append(_line(x_of(value), y_of(0), x_of(value), y_of(0) + 4, INK))
        body.append(_text(x_of(value), y_of(0) + 17, f"{10.0 ** value:.3g}"))
    if lo <= 0 <= hi:
        body.append(_line(x_of(0), top, x_of(0), y_of(0), RED, dash="5 4", width=1.5))
        body.append(_text(x_of(0) + 5, top + 10, "average row (weight 1)", anchor="start",
                          colour=RED))
    body.append(_line(left, y_of(0), left + plot_w, y_of(0), INK))
    body.append(_text(left + plot_w / 2, height - 6, "resampling weight (log scale)", colour=INK,
                      size=12))
    middle = f"{top + plot_h / 2:.0f}"
    body.append(f'<text x="14" y="{middle}" font-size="12" fill="{INK}" text-anchor="middle" '
                f'transform="rotate(-90 14 {middle})">rows</text>')
    return _svg(width, height, body, "distribution of resampling weights"), zeros


def _panel_svg(edges: NDArray, this: NDArray, reference: NDArray | None) -> str:
    """One dimension: the reference as grey bars, this data as a blue step line, shares."""
    width, height, left, top, bottom_pad = 258, 112, 6, 6, 20
    plot_w, plot_h = width - 2 * left, height - top - bottom_pad
    peak = max(float(this.max()), float(reference.max()) if reference is not None else 0.0, 1e-12)
    lo, hi = float(edges[0]), float(edges[-1])
    span = hi - lo if hi > lo else 1.0

    def x_of(v: float) -> float:
        return left + plot_w * (v - lo) / span

    def y_of(s: float) -> float:
        return top + plot_h * (1 - s / (1.08 * peak))

    body = []
    if reference is not None:
        for share, a, b in zip(reference.tolist(), edges[:-1], edges[1:], strict=True):
            body.append(_rect(x_of(a), y_of(share), x_of(b) - x_of(a), y_of(0) - y_of(share),
                              "#d1d5db"))
        points = [f"{x_of(lo):.1f},{y_of(0):.1f}"]
        for share, a, b in zip(this.tolist(), edges[:-1], edges[1:], strict=True):
            points += [f"{x_of(a):.1f},{y_of(share):.1f}", f"{x_of(b):.1f},{y_of(share):.1f}"]
        points.append(f"{x_of(hi):.1f},{y_of(0):.1f}")
        body.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{BLUE}" '
                    f'stroke-width="1.8"/>')
    else:
        for share, a, b in zip(this.tolist(), edges[:-1], edges[1:], strict=True):
            body.append(_rect(x_of(a) + 0.5, y_of(share), x_of(b) - x_of(a) - 1,
                              y_of(0) - y_of(share), BLUE, ' fill-opacity="0.8"'))
    body.append(_line(left, y_of(0), left + plot_w, y_of(0), INK))
    body.append(_text(left, height - 5, _tick(lo), anchor="start", size=10))
    body.append(_text(left + plot_w, height - 5, _tick(hi), anchor="end", size=10))
    if lo < 0 < hi:
        body.append(_line(x_of(0), y_of(0), x_of(0), y_of(0) + 3, INK))
        body.append(_text(x_of(0), height - 5, "0", size=10))
    return _svg(width, height, body, "latent histogram")


def dimension_order(report: BiasReport) -> list[int]:
    """Active dimensions first, then by drift (PSI) or, without a reference, KL to the prior."""
    z = report.latent_dim
    if report.drift is not None:
        psi = np.nan_to_num(report.drift.psi, nan=-1.0)
        return sorted(range(z), key=lambda j: (not report.drift.active[j], -psi[j]))  # type: ignore[union-attr]
    kl = np.nan_to_num(report.kl_to_prior, nan=-1.0)
    return sorted(range(z), key=lambda j: -kl[j])


def dimension_panels(report: BiasReport) -> str:
    panels = []
    order = dimension_order(report)
    for j in order[:MAX_DIMENSION_PANELS]:
        if report.reference is not None:
            ref = report.reference
            chart = _panel_svg(ref.edges[j], ref.share[j], ref.reference_share[j])
            outside = (f"{fmt_percent(float(ref.below[j]))} below, "
                       f"{fmt_percent(float(ref.above[j]))} above the training range")
        else:
            histogram = report.histograms[j]
            counts = histogram.counts.astype(np.float64)
            chart = _panel_svg(histogram.edges, counts / max(counts.sum(), 1.0), None)
            outside = ""
        if report.drift is not None:
            drift = report.drift
            warn = "warn" if drift.psi[j] >= PSI_SIGNIFICANT else ""
            psi = esc(fmt_num(float(drift.psi[j])))
            title_html = (f'dim {j} · <span class="{warn}">PSI {psi}</span> · '
                          f"shift {round(float(drift.mean_shift[j]), 2) + 0.0:+.2f}σ"
                          + ("" if drift.active[j] else ' · <span class="sub">inactive</span>'))
        else:
            title_html = f"dim {j} · KL to prior {esc(fmt_num(float(report.kl_to_prior[j])))}"
        panels.append(f'<div class="panel"><div class="t">{title_html}</div>{chart}'
                      f'<div class="s">{esc(outside)}</div></div>')
    note = ""
    if len(order) > MAX_DIMENSION_PANELS:
        note = (f'<p class="note">Showing {MAX_DIMENSION_PANELS} of {report.latent_dim} '
                f"dimensions; the JSON report holds them all.</p>")
    return f'<div class="grid">{"".join(panels)}</div>{note}'
