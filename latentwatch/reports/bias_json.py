"""A BiasReport as a JSON document, headed by the plain-words summary (latentwatch.reports.summary).

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

from latentwatch.bias.accumulator import BiasReport
from latentwatch.reports.summary import SHARE_BASELINE, summary

logger = logging.getLogger(__name__)



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


# --- JSON ----------------------------------------------------------------------------------------


def _positions(report: BiasReport, positions: NDArray,
               latent: NDArray | None = None) -> list[dict[str, Any]]:
    """One entry per row; with `latent` (k, Z), each row's encoder mean as "latent_mu"."""
    entries: list[dict[str, Any]] = [
        {
            "id": row_id(report, p),
            "position": p,
            "log_density": finite_or_none(report.log_density[p]),
            "weight": finite_or_none(report.weight[p]),
        }
        for p in np.asarray(positions, dtype=np.int64).tolist()
    ]
    if latent is not None:
        for entry, mu in zip(entries, np.asarray(latent), strict=True):
            entry["latent_mu"] = _plain_floats(mu)
    return entries


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
        "density": options.density or None,
        "effective_sample_size": finite_or_none(report.effective_sample_size),
        "effective_sample_fraction": finite_or_none(report.effective_sample_fraction),
        "summary": summary(report),
        "rows": _rows(report),
        "sparsest": _positions(report, report.sparsest, report.sparsest_latent),
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
                "even_share": finite_or_none(g.even_share),
                "share_ratio": finite_or_none(g.share_ratio),
                "share_ratio_low": finite_or_none(g.share_ratio_low),
                "share_ratio_high": finite_or_none(g.share_ratio_high),
                "share_p_value": finite_or_none(g.share_p_value),
                "share_significant": bool(g.share_significant),
                "share_flagged": bool(g.share_flagged),
            }
            for g in report.groups
        ],
        "share_baseline": SHARE_BASELINE,
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
