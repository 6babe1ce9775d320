"""benchmarks/k_study.py's summary: per export (K, R), means over sets, differences to the
reference export with a Wilcoxon signed-rank p, and the cost figures; and its printed table."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

REFERENCE_K = 16  # the shipped default the study compares against
# Cost figures of k_study_cost, per wall second and per CPU second.
COSTS = ("graph_rows_per_s", "default_rows_per_s", "default_over_graph",
         "graph_rows_per_cpu_s", "default_rows_per_cpu_s", "default_over_graph_cpu")


def config_key(k: int, r: int | None) -> str:
    """`K=4` (at the default R) or `K=1,R=1024`."""
    return f"K={k}" if r is None else f"K={k},R={r}"


def _order(key: str) -> tuple[bool, int, int]:
    """The K exports (default R) by K, then the R exports by R."""
    parts = dict(p.split("=") for p in key.split(","))
    return "R" in parts, int(parts["K"]), int(parts.get("R", 0))


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _per_set(seeds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Export key -> the set's means over its seeds."""
    done = [s for s in seeds if "exports" in s]
    keys = sorted({k for s in done for k in s["exports"]}, key=_order)
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        es = [s["exports"][key] for s in done if key in s["exports"]]
        out[key] = {
            "n_seeds": len(es),
            "auroc": _mean([e["default"]["auroc"] for e in es]),
            "aupr": _mean([e["default"]["aupr"] for e in es]),
            "neg_elbo_auroc": _mean([e["kinds"].get("neg_elbo", {}).get("auroc", float("nan"))
                                     for e in es]),
            **{c: _mean([e["cost"][c] for e in es]) for c in COSTS},
            "export_s": _mean([e["export_s"] for e in es]),
            "chosen": [_chosen(e) for e in es],
        }
    return out


def _chosen(export: dict[str, Any]) -> str:
    stage = export["manifest"]["second_stage"]
    if stage is None:
        return export["default_kind"]
    return f"{stage['combine']}({'+'.join(stage['statistics'])})"


def _wilcoxon(differences: list[float]) -> float | None:
    from scipy.stats import wilcoxon

    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2 or not np.any(d != 0):
        return None
    return float(wilcoxon(d).pvalue)


def _versus(sets: dict[str, dict[str, Any]], key: str, reference: str) -> dict[str, Any]:
    """Mean differences (points = x100) of `key` to `reference` over the sets having both."""
    paired = [s for s in sets.values() if key in s and reference in s]
    out: dict[str, Any] = {"reference": reference, "n_sets": len(paired)}
    for metric in ("auroc", "aupr"):
        d = [100 * (s[key][metric] - s[reference][metric]) for s in paired]
        out[f"{metric}_minus_reference_points"] = _mean(d)
        out[f"{metric}_wilcoxon_p"] = _wilcoxon(d)
    for part in ("graph", "default"):
        for unit in ("s", "cpu_s"):
            figure = f"{part}_rows_per_{unit}"
            name = f"{part}_speedup" + ("_cpu" if unit == "cpu_s" else "")
            out[name] = _mean([s[key][figure] / s[reference][figure] for s in paired])
    return out


def summarize(datasets: dict[str, dict[str, Any]], ks: tuple[int, ...]) -> dict[str, Any]:
    sets = {name: _per_set(d["seeds"]) for name, d in datasets.items()}
    sets = {name: s for name, s in sets.items() if s}
    keys = sorted({k for s in sets.values() for k in s}, key=_order)
    reference = config_key(REFERENCE_K if REFERENCE_K in ks else max(ks), None)
    r_reference = config_key(1, None)
    exports: dict[str, Any] = {}
    for key in keys:
        have = [s[key] for s in sets.values() if key in s]
        entry: dict[str, Any] = {
            "n_sets": len(have),
            "auroc": _mean([h["auroc"] for h in have]),
            "aupr": _mean([h["aupr"] for h in have]),
            "neg_elbo_auroc": _mean([h["neg_elbo_auroc"] for h in have]),
            "default_over_graph": _mean([h["default_over_graph"] for h in have]),
            "default_over_graph_cpu": _mean([h["default_over_graph_cpu"] for h in have]),
            "export_s": _mean([h["export_s"] for h in have]),
            "chosen": dict(Counter(c for h in have for c in h["chosen"]).most_common()),
            "versus": _versus(sets, key, reference),
        }
        if ",R=" in key and r_reference in keys:
            entry["versus_k1_default_r"] = _versus(sets, key, r_reference)
        exports[key] = entry
    return {"reference": reference, "n_sets": len(sets), "sets": sets, "exports": exports}


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A Markdown table: per export, mean AUROC / AUPR, their difference to the reference with
    the Wilcoxon p, neg_elbo's AUROC, the cost ratios."""
    lines = [f"reference {summary['reference']}; {summary['n_sets']} sets (means over seeds)", "",
             "| export | sets | AUROC | AUPR | dAUROC pts (p) | dAUPR pts (p) | neg_elbo AUROC "
             "| default/graph CPU (wall) | graph speedup CPU (wall) "
             "| default speedup CPU (wall) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, e in summary["exports"].items():
        v = e["versus"]
        lines.append(
            f"| {key} | {e['n_sets']} | {100 * e['auroc']:.2f} | {100 * e['aupr']:.2f} "
            f"| {v['auroc_minus_reference_points']:+.2f} ({_p(v['auroc_wilcoxon_p'])}) "
            f"| {v['aupr_minus_reference_points']:+.2f} ({_p(v['aupr_wilcoxon_p'])}) "
            f"| {100 * e['neg_elbo_auroc']:.2f} "
            f"| {e['default_over_graph_cpu']:.2f} ({e['default_over_graph']:.2f}) "
            f"| {v['graph_speedup_cpu']:.2f} ({v['graph_speedup']:.2f}) "
            f"| {v['default_speedup_cpu']:.2f} ({v['default_speedup']:.2f}) |")
    r_rows = [(k, e["versus_k1_default_r"]) for k, e in summary["exports"].items()
              if "versus_k1_default_r" in e]
    if r_rows:
        lines += ["", "| R export vs K=1 | sets | dAUROC pts (p) | dAUPR pts (p) "
                  "| default speedup CPU (wall) |", "|---|---:|---:|---:|---:|"]
        for key, v in r_rows:
            lines.append(f"| {key} | {v['n_sets']} "
                         f"| {v['auroc_minus_reference_points']:+.2f} ({_p(v['auroc_wilcoxon_p'])})"
                         f" | {v['aupr_minus_reference_points']:+.2f} ({_p(v['aupr_wilcoxon_p'])})"
                         f" | {v['default_speedup_cpu']:.2f} ({v['default_speedup']:.2f}) |")
    return lines
