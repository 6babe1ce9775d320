"""Summaries of benchmarks/quality.py's tabular results over a group of sets (a half, or all).

Per method: mean AUROC, mean AUPR and mean rank (per set, the default and every baseline are
ranked by AUROC, 1 = best, ties averaged); the best baseline by mean AUROC; a Wilcoxon
signed-rank test of the default against it over the sets (paired by set, two-sided); the gap
sets side by side. Calibration means count, at each alpha, only the sets whose calibration can
resolve it (n calibration rows cannot flag below 1 / (n + 1)); the others are listed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from quality_baselines import BASELINES
from quality_halves import GAP_SETS, dataset_name
from quality_metrics import ALPHAS, FDR_LEVEL, finite_mean

RANKED_DEFAULT = "default"


def rank_rows(values: Mapping[str, float]) -> dict[str, float]:
    """Rank of each method by value, 1 = highest, ties share their mean rank; NaN ranks last."""
    names = list(values)
    v = np.array([values[n] if np.isfinite(values[n]) else -np.inf for n in names])
    order = (-v).argsort(kind="stable")
    ranks = np.empty(len(names))
    ranks[order] = np.arange(1, len(names) + 1, dtype=np.float64)
    for value in np.unique(v):  # average the ranks of ties
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return {n: float(r) for n, r in zip(names, ranks, strict=True)}


def mean_ranks(per_set: Sequence[Mapping[str, float]], methods: Sequence[str]) -> dict[str, float]:
    """Mean over sets of each method's AUROC rank among `methods` (sets lacking one are skipped)."""
    ranks = [rank_rows({m: row[m] for m in methods})
             for row in per_set if all(m in row for m in methods)]
    return {m: finite_mean([r[m] for r in ranks]) for m in methods}


def wilcoxon_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired values a against b (zero differences
    dropped, as scipy's default); wins/losses/ties count a > b, a < b, a == b."""
    from scipy.stats import wilcoxon

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    diff = x[keep] - y[keep]
    out: dict[str, Any] = {"n": int(keep.sum()), "wins": int((diff > 0).sum()),
                           "losses": int((diff < 0).sum()), "ties": int((diff == 0).sum()),
                           "median_difference": float(np.median(diff)) if diff.size else None}
    if (diff != 0).sum() < 1:
        return {**out, "statistic": None, "p_value": None}
    result = wilcoxon(x[keep], y[keep], alternative="two-sided")
    return {**out, "statistic": float(result.statistic), "p_value": float(result.pvalue)}


def _seed_resolves(seed: Mapping[str, Any], alpha: float) -> bool:
    return "calibration" in seed and seed["calibration"]["min_alpha"] <= alpha


def calibration_summary(datasets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """False-alarm means per alpha over the sets that resolve it (per set: its seeds that do),
    the sets left out at each alpha, and BH's mean FDR and power at q over every calibrated set."""
    far: dict[str, float] = {}
    included: dict[str, list[str]] = {}
    left_out: dict[str, list[str]] = {}
    for alpha in ALPHAS:
        key, per_set = str(alpha), []
        included[key], left_out[key] = [], []
        for name, d in datasets.items():
            seeds = [s for s in d["seeds"] if "calibration" in s]
            if not seeds:
                continue
            resolved = [s["calibration"]["false_alarm_rate"][key] for s in seeds
                        if _seed_resolves(s, alpha)]
            (included if resolved else left_out)[key].append(name)
            if resolved:
                per_set.append(finite_mean(resolved))
        far[key] = finite_mean(per_set)
    calibrated = [d["mean"]["calibration"] for d in datasets.values() if d["mean"]["calibration"]]
    return {
        "false_alarm_rate": far,
        "sets_included": included,
        "sets_left_out": left_out,
        "rule": "a set counts at alpha when its calibration size n has 1 / (n + 1) <= alpha",
        "bh_q": FDR_LEVEL,
        "bh_fdr": finite_mean([c["bh_fdr"] for c in calibrated]),
        "bh_power": finite_mean([c["bh_power"] for c in calibrated]),
        "n_sets": len(calibrated),
    }


def gap_table(datasets: Mapping[str, Mapping[str, Any]], best: str | None) -> list[dict[str, Any]]:
    """The gap sets present: default AUROC beside the group's best baseline and that set's."""
    rows = []
    for stem, d in datasets.items():
        if dataset_name(stem) not in GAP_SETS:
            continue
        methods = d["mean"]["methods"]
        here = {m: methods[m]["auroc"] for m in BASELINES
                if m in methods and np.isfinite(methods[m]["auroc"])}
        set_best = max(here, key=lambda m: here[m]) if here else None
        rows.append({
            "dataset": stem, "half": d.get("half"),
            "default": methods.get(RANKED_DEFAULT, {}).get("auroc"),
            "best_baseline": best, "best_baseline_auroc": here.get(best) if best else None,
            "set_best_baseline": set_best,
            "set_best_baseline_auroc": here.get(set_best) if set_best else None,
        })
    return rows


def summarize_group(datasets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Every summary figure over `datasets` (name -> the per-set entry of run_tabular)."""
    names = sorted({m for d in datasets.values() for m in d["mean"]["methods"]})
    mean: dict[str, dict[str, Any]] = {
        m: {key: finite_mean([d["mean"]["methods"][m][key] for d in datasets.values()
                              if m in d["mean"]["methods"]])
            for key in ("auroc", "aupr", "seconds")}
        for m in names
    }
    for m in names:
        mean[m]["n_datasets"] = sum(m in d["mean"]["methods"] for d in datasets.values())
    baselines = [m for m in BASELINES if m in mean and np.isfinite(mean[m]["auroc"])]
    best = max(baselines, key=lambda m: mean[m]["auroc"]) if baselines else None
    ranked = [RANKED_DEFAULT, *baselines] if RANKED_DEFAULT in mean else baselines
    per_set = [{m: d["mean"]["methods"][m]["auroc"] for m in d["mean"]["methods"]}
               for d in datasets.values()]
    for m, r in mean_ranks(per_set, ranked).items():
        mean[m]["mean_rank"] = r
    delta, test = None, None
    if best is not None and RANKED_DEFAULT in mean:
        delta = 100.0 * (mean[RANKED_DEFAULT]["auroc"] - mean[best]["auroc"])
        pairs = [(row[RANKED_DEFAULT], row[best]) for row in per_set
                 if RANKED_DEFAULT in row and best in row]
        test = wilcoxon_test([p[0] for p in pairs], [p[1] for p in pairs])
    return {
        "datasets": list(datasets), "n_datasets": len(datasets), "methods": mean,
        "ranked_methods": ranked, "best_baseline": best,
        "default_minus_best_baseline_auroc_points": delta,
        "wilcoxon_default_vs_best_baseline": test,
        "gap_sets": gap_table(datasets, best),
        "calibration": calibration_summary(datasets) if datasets else {},
    }


def summarize_halves(datasets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """{"selection": ..., "report": ...}: summarize_group over each half's sets present."""
    out = {}
    for half in ("selection", "report"):
        members = {n: d for n, d in datasets.items() if d.get("half") == half}
        if members:
            out[half] = summarize_group(members)
    return out
