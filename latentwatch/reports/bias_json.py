"""A BiasReport as a JSON document, and the plain-words summary that heads the JSON and the HTML.

Everything here is computed from the report's numbers; nothing talks to a server. Non-finite
values become null, so the JSON is strict (`allow_nan=False`) and any JSON reader takes it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.accumulator import DISPARITY_BAND, BiasReport, GroupStats

logger = logging.getLogger(__name__)

# Flagged groups named one by one in the summary (more of the group in the sparse regions, then
# less); the rest are counted.
MAX_SPARSE_GROUPS_NAMED, MAX_DENSE_GROUPS_NAMED = 3, 1
# A dimension's share of rows outside the training range worth a sentence.
OUT_OF_RANGE_NOTE = 0.01


@dataclass(frozen=True)
class ReportContext:
    """What the report is about, beyond the numbers: the model, the data, when."""

    model_name: str
    model_version: str
    source: str
    created_at: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )


def finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _floats(values: NDArray) -> list[float | None]:
    return [finite_or_none(v) for v in np.asarray(values, dtype=np.float64).tolist()]


def _plain_floats(values: NDArray) -> list[float | None]:
    """Fast path for large arrays: tolist() once, then only patch the non-finite entries."""
    array = np.asarray(values, dtype=np.float64)
    out: list[float | None] = list(array.tolist())
    for index in np.flatnonzero(~np.isfinite(array)).tolist():
        out[index] = None
    return out


def row_id(report: BiasReport, position: int) -> str | int:
    """The caller's id, or the row's position (an integer) when no ids were given."""
    return report.ids[position] if report.ids is not None else int(position)


def group_label(group: GroupStats) -> str:
    return f"{group.column}={group.value}"


def sparse_weight_share(report: BiasReport) -> tuple[int, float]:
    """(rows in the sparsest `sparse_fraction` of the data, their share of the total weight)."""
    # The same count the group statistics use (latentwatch.bias.accumulator).
    n_sparse = max(1, int(round(report.options.sparse_fraction * report.n_rows)))
    order = np.argsort(report.log_density, kind="stable")  # lowest density first
    total = float(report.weight.sum())
    share = float(report.weight[order[:n_sparse]].sum()) / total if total > 0 else float("nan")
    return n_sparse, share


# --- words ---------------------------------------------------------------------------------------


def fmt_count(n: float) -> str:
    """A row count with thousands separators; fractional counts (an ESS) are rounded."""
    return f"{round(n):,}" if math.isfinite(n) else "n/a"


def fmt_percent(fraction: float) -> str:
    if not math.isfinite(fraction):
        return "n/a"
    value = 100 * fraction
    if value != 0 and abs(value) < 1:
        return f"{value:.1f}%"
    return f"{value:.0f}%"


def fmt_num(value: float) -> str:
    """Three significant digits; thousands to billions in full (1,234 rather than 1.23e+03)."""
    if not math.isfinite(value):
        return "n/a"
    if 999.5 <= abs(value) < 1e9:  # 999.7 would print as 1e+03
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _weight_sentence(report: BiasReport) -> str:
    n_sparse, share = sparse_weight_share(report)
    fraction = n_sparse / report.n_rows
    sentence = (
        f"The {fmt_percent(fraction)} of rows in the sparsest latent regions "
        f"({fmt_count(n_sparse)} rows) get {fmt_percent(share)} of the resampling weight"
    )
    if math.isfinite(share) and share > 2 * fraction:
        return sentence + ": resampling by these weights would draw them far more often."
    return sentence + "."


def _ess_sentence(report: BiasReport) -> str:
    ess = report.effective_sample_size
    fraction = report.effective_sample_fraction
    head = (
        f"Effective sample size is {fmt_count(ess)} of {fmt_count(report.n_rows)} rows "
        f"({fmt_percent(fraction)})"
    )
    if not math.isfinite(fraction):
        return head + "."
    if fraction < 0.1:
        return head + (
            ": the weight is concentrated on few rows, so the data has large regions it covers "
            "thinly."
        )
    if fraction < 0.5:
        return head + ": some latent regions are covered much more thinly than others."
    return head + ": the weights are close to uniform, so the latent density is fairly even."


def fmt_p(p: float) -> str:
    """A p-value: three significant digits; one that underflowed as a bound."""
    if not math.isfinite(p):
        return "n/a"
    return "p < 1e-300" if p < 1e-300 else f"p = {p:.2g}"


def _test_words(report: BiasReport, group: GroupStats) -> str:
    """The ratio with its interval and test, in brackets' words."""
    level = report.options.significance_level
    verdict = "significant" if group.significant else "not significant"
    return (
        f"ratio {fmt_num(group.representation_ratio)}, "
        f"{100 * (1 - level):g}% interval {fmt_num(group.ratio_low)} to "
        f"{fmt_num(group.ratio_high)}, {fmt_p(group.p_value)}, {verdict} at {level:g} after "
        f"Benjamini-Hochberg over {len(report.groups)} groups"
    )


def group_finding(report: BiasReport, group: GroupStats) -> str:
    """What was measured for one group: its rows' share in the sparse regions against all rows'."""
    n_sparse, _ = sparse_weight_share(report)
    overall = n_sparse / report.n_rows
    own = group.n_sparse_rows / group.n_rows if group.n_rows else float("nan")
    side = "larger" if group.representation_ratio > 1 else "smaller"
    return (
        f"A {side} share of group {group_label(group)} lies in the sparsest latent regions "
        f"({fmt_percent(own)} of its {fmt_count(group.n_rows)} rows) than of the data overall "
        f"({fmt_percent(overall)}): {_test_words(report, group)}."
    )


def _group_sentences(report: BiasReport) -> list[str]:
    low, high = DISPARITY_BAND
    if not report.groups:
        return ["No group labels were given, so there are no per-group figures."]
    level = report.options.significance_level
    flagged = [g for g in report.groups if g.flagged]
    if not flagged:
        worst = max(
            report.groups, key=lambda g: abs(math.log(max(g.representation_ratio, 1e-12)))
        )
        loose = sum(g.outside_band for g in report.groups)
        sentences = [
            f"No group's share of the sparsest latent regions differs from the data's with "
            f"significance at {level:g} and a ratio outside [{low:g}, {high:g}] (farthest from "
            f"1: {group_label(worst)}, {_test_words(report, worst)})."
        ]
        if loose:
            sentences.append(
                f"{loose} group{'s have ratios' if loose > 1 else ' has a ratio'} outside "
                f"[{low:g}, {high:g}] that the test does not tell apart from chance."
            )
        return sentences
    # More of the group in the sparse regions leads, as the data covers those regions thinly;
    # then the groups with the least there.
    sparse_side = sorted((g for g in flagged if g.representation_ratio > high),
                         key=lambda g: -g.representation_ratio)
    dense_side = sorted((g for g in flagged if g.representation_ratio < low),
                        key=lambda g: g.representation_ratio)
    named = sparse_side[:MAX_SPARSE_GROUPS_NAMED] + dense_side[:MAX_DENSE_GROUPS_NAMED]
    sentences = [group_finding(report, group) for group in named]
    if len(flagged) > len(named):
        rest = len(flagged) - len(named)
        sentences.append(
            f"{rest} more group{'s' if rest > 1 else ''} {'are' if rest > 1 else 'is'} flagged "
            f"(significant at {level:g} and a ratio outside [{low:g}, {high:g}])."
        )
    return sentences


def _drift_sentences(report: BiasReport) -> list[str]:
    drift = report.drift
    if drift is None:
        return ["The model has no stored training reference, so drift was not measured."]
    n_active = int(np.count_nonzero(drift.active))
    over = (
        f"{n_active} active latent dimension{'s' if n_active != 1 else ''}"
        if n_active
        else f"all {report.latent_dim} latent dimensions (none is active)"
    )
    figures = (
        f"PSI {fmt_num(drift.overall)} averaged over {over}; largest in dimension "
        f"{drift.max_psi_dimension}, PSI {fmt_num(drift.max_psi)}"
    )
    words = {"none": "No drift", "moderate": "Moderate drift", "significant": "Significant drift"}
    sentences = [f"{words.get(drift.level, drift.level)} against the training data ({figures})."]
    if report.reference is not None:
        # Only dimensions the drift figure counts: inactive ones barely move in training, so
        # their range is narrow and says little.
        used = drift.active if n_active else np.ones(report.latent_dim, dtype=bool)
        outside = np.where(used, report.reference.below + report.reference.above, -1.0)  # (Z,)
        dimension = int(np.argmax(outside))
        if outside[dimension] >= OUT_OF_RANGE_NOTE:
            sentences.append(
                f"{fmt_percent(float(outside[dimension]))} of rows fall outside the training range "
                f"of dimension {dimension}."
            )
    return sentences


def _kl_sentence(report: BiasReport) -> str:
    total = report.kl_to_prior_total
    sentence = (
        f"The aggregate posterior is {fmt_num(total)} nats from the prior N(0, I) "
        f"(KL summed over {report.latent_dim} dimensions"
    )
    if report.reference_kl_to_prior is not None:
        reference = float(np.sum(report.reference_kl_to_prior))
        return sentence + f"; the training data's: {fmt_num(reference)} nats)."
    return sentence + ")."


def summary(report: BiasReport) -> list[str]:
    """Plain-words sentences, most important first."""
    return [
        _weight_sentence(report),
        _ess_sentence(report),
        *_group_sentences(report),
        *_drift_sentences(report),
        _kl_sentence(report),
    ]


# --- JSON ----------------------------------------------------------------------------------------


def _positions(report: BiasReport, positions: NDArray) -> list[dict[str, Any]]:
    return [
        {
            "id": row_id(report, p),
            "position": p,
            "log_density": finite_or_none(report.log_density[p]),
            "weight": finite_or_none(report.weight[p]),
        }
        for p in np.asarray(positions, dtype=np.int64).tolist()
    ]


def _rows(report: BiasReport) -> list[dict[str, Any]]:
    ids: list[str] | list[int] = (
        list(report.ids) if report.ids is not None else list(range(report.n_rows))
    )
    log_density = _plain_floats(report.log_density)
    weight = _plain_floats(report.weight)
    return [
        {"id": i, "log_density": d, "weight": w}
        for i, d, w in zip(ids, log_density, weight, strict=True)
    ]


def _drift(report: BiasReport) -> dict[str, Any] | None:
    drift = report.drift
    if drift is None:
        return None
    return {
        "overall": finite_or_none(drift.overall),
        "level": drift.level,
        "max_psi": finite_or_none(drift.max_psi),
        "max_psi_dimension": int(drift.max_psi_dimension),
        "gaussian_kl": finite_or_none(drift.gaussian_kl),
        "reference_rows": int(drift.reference_rows),
        "per_dimension": [
            {"dimension": j, "psi": psi, "mean_shift": shift, "active": bool(active)}
            for j, (psi, shift, active) in enumerate(
                zip(_floats(drift.psi), _floats(drift.mean_shift), drift.active.tolist(),
                    strict=True)
            )
        ],
    }


def _dimensions(report: BiasReport) -> list[dict[str, Any]]:
    out = []
    for j, histogram in enumerate(report.histograms):
        reference = None
        if report.reference is not None:
            comparison = report.reference
            reference = {
                "edges": _floats(comparison.edges[j]),
                "reference_share": _floats(comparison.reference_share[j]),
                "share": _floats(comparison.share[j]),
                "below": finite_or_none(comparison.below[j]),
                "above": finite_or_none(comparison.above[j]),
            }
        out.append({
            "dimension": j,
            "edges": _floats(histogram.edges),
            "counts": [int(c) for c in histogram.counts.tolist()],
            "reference": reference,
        })
    return out


def report_to_dict(report: BiasReport, context: ReportContext) -> dict[str, Any]:
    """The JSON document: rows in input order, ids as given or as integer positions."""
    options = report.options
    reference_kl = report.reference_kl_to_prior
    return {
        "model": {"name": context.model_name, "version": context.model_version},
        "data": context.source,
        "created_at": context.created_at,
        "n_rows": report.n_rows,
        "latent_dim": report.latent_dim,
        "mode": options.mode,
        "bins": options.bins,
        "alpha": options.alpha,
        "top_k": options.top_k,
        "sparse_fraction": options.sparse_fraction,
        "significance_level": options.significance_level,
        "effective_sample_size": finite_or_none(report.effective_sample_size),
        "effective_sample_fraction": finite_or_none(report.effective_sample_fraction),
        "summary": summary(report),
        "rows": _rows(report),
        "sparsest": _positions(report, report.sparsest),
        "densest": _positions(report, report.densest),
        "groups": [
            {
                "column": g.column,
                "value": g.value,
                "n_rows": g.n_rows,
                "share": finite_or_none(g.share),
                "sparse_share": finite_or_none(g.sparse_share),
                "representation_ratio": finite_or_none(g.representation_ratio),
                "mean_weight": finite_or_none(g.mean_weight),
                "n_sparse_rows": g.n_sparse_rows,
                "ratio_low": finite_or_none(g.ratio_low),
                "ratio_high": finite_or_none(g.ratio_high),
                "p_value": finite_or_none(g.p_value),
                "significant": bool(g.significant),
                "flagged": bool(g.flagged),
            }
            for g in report.groups
        ],
        "worst_group_ratio": finite_or_none(report.worst_group_ratio),
        "drift": _drift(report),
        "kl_to_prior": {
            "total": finite_or_none(report.kl_to_prior_total),
            "per_dimension": _floats(report.kl_to_prior),
            "reference_total": (
                None if reference_kl is None else finite_or_none(float(np.sum(reference_kl)))
            ),
        },
        "dimensions": _dimensions(report),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a NaN that slipped past finite_or_none fails here, not in a reader.
    text = json.dumps(document, allow_nan=False, indent=1)
    path.write_text(text + "\n", encoding="utf-8")
    logger.info("wrote %s (%d bytes)", path, len(text) + 1)
