"""A BiasReport as one self-contained HTML page: inline CSS, inline SVG charts, inline PNG images.

Nothing is fetched when the page opens (no scripts, fonts or images from elsewhere), so the file
can be mailed, archived or opened offline. Every piece of text goes through html.escape.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.accumulator import DISPARITY_BAND, BiasReport, GroupStats
from latentwatch.reports.bias_json import ReportContext, row_id
from latentwatch.reports.charts import (
    MAX_DIMENSION_PANELS,
    dimension_panels,
    esc,
    group_chart,
    image_uri,
    weight_chart,
)
from latentwatch.reports.summary import (
    SHARE_BASELINE,
    fmt_count,
    fmt_num,
    fmt_p,
    fmt_percent,
    group_label,
    summary,
)

logger = logging.getLogger(__name__)

MAX_GROUP_BARS = 40
MAX_TABLE_FEATURES = 12
MAX_LISTED_ROWS = 20
LEVEL_COLOURS = {"none": "#15803d", "moderate": "#b45309", "significant": "#dc2626"}

CSS = """
body{margin:0;background:#f3f4f6;color:#1f2937;
 font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue","DejaVu Sans",sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 32px 40px}
h1{font-size:28px;margin:0 0 4px}h2{font-size:20px;margin:0 0 4px}
.sub,.note{color:#6b7280}.note{font-size:13px;margin:4px 0 12px}
section{background:#fff;border-radius:10px;padding:20px 24px;margin:18px 0;
 box-shadow:0 1px 3px rgba(0,0,0,.08)}
.summary{border-left:6px solid #2563eb}.summary ul{margin:6px 0 0;padding-left:22px}
.summary li{font-size:19px;line-height:1.45;margin:6px 0}
.cards{display:grid;grid-template-columns:repeat(5,1fr);gap:14px}
.card{background:#f9fafb;border:1px solid #e5e7eb;border-radius:8px;padding:12px 14px}
.card .k{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#6b7280}
.card .v{font-size:28px;font-weight:650;margin:2px 0}.card .d{font-size:13px;color:#6b7280}
.grid{display:grid;grid-template-columns:repeat(4,1fr);gap:10px}
.panel{border:1px solid #e5e7eb;border-radius:6px;padding:6px 8px}
.panel .t{font-size:12.5px;font-weight:600}.panel .s{font-size:11.5px;color:#6b7280}
.legend span{display:inline-block;width:12px;height:12px;vertical-align:-1px;margin:0 5px 0 14px}
.examples{display:flex;flex-wrap:wrap;gap:10px}
.ex{text-align:center;font-size:11.5px;color:#6b7280}
.ex img,.ex .lab{display:block;width:64px;height:64px;margin:2px 0}
.ex img{image-rendering:pixelated;border:1px solid #d1d5db}
.ex .lab{line-height:64px;text-align:right;width:56px}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:24px}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;text-align:right;border-bottom:1px solid #f0f0f0}
th{color:#6b7280;font-weight:600}td.l,th.l{text-align:left}
tr.dec td{color:#1d4ed8;border-bottom:2px solid #e5e7eb}
.warn{color:#dc2626;font-weight:600}
footer{color:#6b7280;font-size:13px;text-align:center;margin-top:12px}
svg text{font-family:inherit}
"""


@dataclass(frozen=True, eq=False)
class RegionExamples:
    """Rows of one latent region (densest or sparsest), ready to show."""

    positions: NDArray[np.int64]  # (k,)
    inputs: NDArray[np.float64] | None  # (k, F) rows in the data's units
    decoded: NDArray[np.float64] | None  # (k, F) or (k, C, H, W) decoder means, same units


@dataclass(frozen=True, eq=False)
class Examples:
    image_shape: tuple[int, ...] | None  # (C, H, W) for images; None shows tables
    densest: RegionExamples
    sparsest: RegionExamples
    pixel_max: float = 1.0  # images: the data value drawn white (0 is black)
    feature_names: tuple[str, ...] | None = None  # table headers; x0, x1, ... when None



# --- sections ------------------------------------------------------------------------------------


def _card(key: str, value: str, detail: str, colour: str = "") -> str:
    style = f' style="color:{colour}"' if colour else ""
    return (f'<div class="card"><div class="k">{esc(key)}</div><div class="v"{style}>'
            f'{esc(value)}</div><div class="d">{esc(detail)}</div></div>')


def _key_figures(report: BiasReport) -> str:
    cards = [
        _card("Rows", fmt_count(report.n_rows), f"{report.latent_dim} latent dimensions"),
        _card("Effective sample size", fmt_count(report.effective_sample_size),
              f"{fmt_percent(report.effective_sample_fraction)} of the rows"),
    ]
    drift = report.drift
    if drift is None:
        cards.append(_card("Drift (PSI)", "n/a", "no training reference stored"))
    else:
        cards.append(_card("Drift (PSI)", fmt_num(drift.overall),
                           f"{drift.level}; max {fmt_num(drift.max_psi)} in dim "
                           f"{drift.max_psi_dimension}", LEVEL_COLOURS.get(drift.level, "")))
    kl_detail = "aggregate posterior vs N(0, I)"
    if report.reference_kl_to_prior is not None:
        kl_detail = f"training data: {fmt_num(float(np.sum(report.reference_kl_to_prior)))} nats"
    cards.append(_card("KL to prior (nats)", fmt_num(report.kl_to_prior_total), kl_detail))
    if report.groups:
        flagged = sum(g.flagged for g in report.groups)
        low, high = DISPARITY_BAND
        level = report.options.significance_level
        cards.append(_card("Groups flagged", f"{flagged} of {len(report.groups)}",
                           f"significant at {level:g} (BH) and ratio outside [{low:g}, {high:g}]",
                           "#dc2626" if flagged else ""))
        uneven = sum(g.share_flagged for g in report.groups)
        cards.append(_card("Row counts off an even split", f"{uneven} of {len(report.groups)}",
                           f"significant at {level:g} (BH) and ratio outside [{low:g}, {high:g}]; "
                           "the baseline is an even split, not the population",
                           "#dc2626" if uneven else ""))
    else:
        cards.append(_card("Groups", "none", "no group labels given"))
    return f'<section><h2>Key figures</h2><div class="cards">{"".join(cards)}</div></section>'


def _shown_groups(groups: Sequence[GroupStats]) -> list[GroupStats]:
    """The groups farthest from parity when there are too many, grouped by column."""
    chosen = list(groups)
    if len(chosen) > MAX_GROUP_BARS:
        chosen = sorted(chosen, key=lambda g: -abs(np.log(max(g.representation_ratio, 1e-12))))
        chosen = chosen[:MAX_GROUP_BARS]
    columns = list(dict.fromkeys(g.column for g in groups))
    return sorted(chosen, key=lambda g: (columns.index(g.column), -g.representation_ratio))


def _groups_section(report: BiasReport) -> str:
    if not report.groups:
        return ('<section><h2>Groups</h2><p class="note">No group labels were given, so there '
                "are no per-group figures.</p></section>")
    shown = _shown_groups(report.groups)
    low, high = DISPARITY_BAND
    note = ""
    if len(shown) < len(report.groups):
        note = (f'<p class="note">Showing the {len(shown)} of {len(report.groups)} groups '
                "farthest from parity; the JSON report holds them all.</p>")
    fraction = fmt_percent(report.options.sparse_fraction)
    level = report.options.significance_level
    return (
        "<section><h2>Groups</h2>"
        f'<p class="note">Representation ratio = a group\'s share of the sparsest {fraction} of '
        f"rows (lowest latent density) divided by its share of all rows: above 1, a larger share "
        f"of the group lies in the sparse latent regions than of the data overall; below 1, a "
        f"smaller one. It measures where the group sits in latent space, not how many rows it "
        f"has. Whiskers: the ratio's {100 * (1 - level):g}% interval. Red (flagged): a two-sided "
        f"binomial test is significant at {level:g} after Benjamini-Hochberg over all "
        f"{len(report.groups)} groups and the ratio is outside [{low:g}, {high:g}]. Column "
        f"\"vs even split\": the group's share of all rows divided by 1 / G for a column of G "
        f"values, with its {100 * (1 - level):g}% interval; \"fewer\" or \"more\" when a "
        f"two-sided binomial test against an even split is significant at {level:g} after "
        f"Benjamini-Hochberg over all share tests and that ratio is outside [{low:g}, {high:g}]. "
        f"The baseline is {esc(SHARE_BASELINE)}.</p>"
        f"{group_chart(shown)}{note}{_groups_table(shown)}</section>"
    )


def _groups_table(groups: Sequence[GroupStats]) -> str:
    heads = ("rows", "share", "in sparse", "ratio", "interval", "p-value", "significant",
             "flagged", "vs even split")
    rows = []
    for g in groups:
        cells = [fmt_count(g.n_rows), fmt_percent(g.share), fmt_count(g.n_sparse_rows),
                 fmt_num(g.representation_ratio),
                 f"{fmt_num(g.ratio_low)} to {fmt_num(g.ratio_high)}",
                 fmt_p(g.p_value).removeprefix("p = "), "yes" if g.significant else "no"]
        flag = '<td class="warn">yes</td>' if g.flagged else "<td>no</td>"
        rows.append(f'<tr><td class="l">{esc(group_label(g))}</td>'
                    + "".join(f"<td>{esc(c)}</td>" for c in cells) + f"{flag}"
                    + f"{_even_split_cell(g)}</tr>")
    head = "".join(f"<th>{h}</th>" for h in heads)
    return f'<table><tr><th class="l">group</th>{head}</tr>{"".join(rows)}</table>'



def _even_split_cell(g: GroupStats) -> str:
    """The share ratio against an even split with its interval, and fewer/more when flagged."""
    text = (f"{g.share_ratio:.2f} [{g.share_ratio_low:.2f}, {g.share_ratio_high:.2f}]"
            if np.isfinite(g.share_ratio) else "n/a")
    side = "fewer" if g.fewer_rows else "more" if g.more_rows else ""
    if side:
        return f'<td class="warn">{esc(text)} {side}</td>'
    return f"<td>{esc(text)}</td>"


def _weights_section(report: BiasReport) -> str:
    chart, zeros = weight_chart(report.weight)
    zero_note = ""
    if zeros:
        zero_note = f" {fmt_count(zeros)} rows have weight 0 (underflow) and are not shown."
    return (
        "<section><h2>Resampling weights</h2>"
        f'<p class="note">Mode {esc(report.options.mode)}: a row of weight 3 would be drawn three '
        f"times as often as an average row when resampling to even out the latent density. "
        f"Weights have mean 1.{esc(zero_note)}</p>{chart}</section>"
    )


def _dimensions_section(report: BiasReport) -> str:
    if report.reference is not None:
        legend = ('<div class="legend note"><span style="background:#d1d5db;margin-left:0">'
                  '</span>training reference<span style="background:#2563eb;height:3px;'
                  'vertical-align:3px"></span>this data</div>')
        how = ("Share of rows per bin of the training means' range, for each latent dimension; "
               "active dimensions first, then by drift (PSI).")
    else:
        legend = ""
        how = ("This data's encoder means per latent dimension (no training reference is stored "
               "with the model); ordered by KL to the prior.")
    shown = min(report.latent_dim, MAX_DIMENSION_PANELS)
    return (f"<section><h2>Latent dimensions</h2><p class=\"note\">{esc(how)} {shown} of "
            f"{report.latent_dim} shown.</p>{legend}{dimension_panels(report)}</section>")


def _image_region(
    report: BiasReport, region: RegionExamples, image_shape: Sequence[int], pixel_max: float
) -> str:
    labels = "".join(f'<span class="lab">{what}</span>' for what, rows in
                     (("input", region.inputs), ("decoded", region.decoded)) if rows is not None)
    cards = [f'<div class="ex">{labels}</div>']
    for i, position in enumerate(region.positions.tolist()):
        images = "".join(
            f'<img alt="{esc(what)}" src="{image_uri(rows[i] / pixel_max, image_shape)}">'
            for what, rows in (("input", region.inputs), ("decoded", region.decoded))
            if rows is not None and i < rows.shape[0]
        )
        cards.append(f'<div class="ex">{images}{esc(report.id_of(position))}</div>')
    return f'<div class="examples">{"".join(cards)}</div>'


def _table_region(
    report: BiasReport, region: RegionExamples, names: tuple[str, ...] | None = None
) -> str:
    width = next((r.shape[1] for r in (region.inputs, region.decoded) if r is not None), 0)
    shown = min(width, MAX_TABLE_FEATURES)
    if names is None or len(names) != width:
        names = tuple(f"x{f}" for f in range(width))
    head = "".join(f"<th>{esc(names[f])}</th>" for f in range(shown))
    body = []
    for i, position in enumerate(region.positions.tolist()):
        for what, rows in (("input", region.inputs), ("decoded", region.decoded)):
            if rows is None or i >= rows.shape[0]:
                continue
            cells = "".join(f"<td>{esc(fmt_num(float(v)))}</td>" for v in rows[i, :shown])
            row_class = ' class="dec"' if what == "decoded" else ""
            body.append(f'<tr{row_class}><td class="l">{esc(report.id_of(position))}</td>'
                        f'<td class="l">{what}</td>{cells}</tr>')
    more = f'<p class="note">First {shown} of {width} features.</p>' if width > shown else ""
    return (f'<table><tr><th class="l">id</th><th class="l">row</th>{head}</tr>'
            f'{"".join(body)}</table>{more}')


def _examples_section(report: BiasReport, examples: Examples | None) -> str:
    if examples is None:
        return ""
    parts = []
    regions = (("Sparsest latent regions: what this data covers worst", examples.sparsest),
               ("Densest latent regions: what this data covers best", examples.densest))
    for title, region in regions:
        if region.positions.size == 0:
            continue
        if examples.image_shape is not None:
            content = _image_region(report, region, examples.image_shape, examples.pixel_max)
        else:
            content = _table_region(report, region, examples.feature_names)
        parts.append(f"<h3>{esc(title)}</h3>{content}")
    if not parts:
        return ""
    how = ("Each column: the input (top) and the decoder's mean at the row's latent mean "
           "(below), with the row's id." if examples.image_shape is not None else
           "Each row as sent (input) and the decoder's mean at its latent mean (decoded), in the "
           "data's units.")
    return f'<section><h2>Examples</h2><p class="note">{esc(how)}</p>{"".join(parts)}</section>'


def _rows_table(report: BiasReport, positions: NDArray, title: str) -> str:
    rows = "".join(
        f'<tr><td class="l">{esc(row_id(report, p))}</td>'
        f"<td>{esc(fmt_num(float(report.log_density[p])))}</td>"
        f"<td>{esc(fmt_num(float(report.weight[p])))}</td></tr>"
        for p in positions[:MAX_LISTED_ROWS].tolist()
    )
    return (f"<div><h3>{esc(title)}</h3><table><tr><th class=\"l\">id</th><th>log density</th>"
            f"<th>weight</th></tr>{rows}</table></div>")


def _rows_section(report: BiasReport) -> str:
    if report.sparsest.size == 0:
        return ""
    return (
        '<section><h2>Rows at the extremes</h2><div class="cols">'
        f"{_rows_table(report, report.sparsest, 'Sparsest (lowest latent density) first')}"
        f"{_rows_table(report, report.densest, 'Densest first')}</div></section>"
    )


def render_html(
    report: BiasReport, context: ReportContext, examples: Examples | None = None
) -> str:
    """The whole page as one string."""
    options = report.options
    sentences = "".join(f"<li>{esc(s)}</li>" for s in summary(report))
    footer = (
        f"model {context.model_name} version {context.model_version} · data {context.source} · "
        f"mode {options.mode} · bins {options.bins} · alpha {options.alpha:g} · top_k "
        f"{options.top_k} · sparse fraction {options.sparse_fraction:g} · created "
        f"{context.created_at}"
    )
    title = f"Bias report: {context.source} · {context.model_name}"
    return "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>",
        "<h1>Latent-density bias report</h1>",
        f'<div class="sub">{esc(context.source)} through model {esc(context.model_name)} '
        f"version {esc(context.model_version)} · {esc(fmt_count(report.n_rows))} rows · "
        f"{esc(context.created_at)}</div>",
        f'<section class="summary"><h2>Summary</h2><ul>{sentences}</ul></section>',
        _key_figures(report),
        _groups_section(report),
        _weights_section(report),
        _dimensions_section(report),
        _examples_section(report, examples),
        _rows_section(report),
        f"<footer>{esc(footer)}</footer></main></body></html>\n",
    ])


def write_html(path: Path, page: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    logger.info("wrote %s (%d bytes)", path, len(page.encode("utf-8")))
