"""benchmarks/quality.py's output: the printed tables, the summary lines, the JSON's extras."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

import numpy as np
from quality_baselines import BASELINES
from quality_metrics import ALPHAS
from quality_tabular import LATENTWATCH_COLUMNS


def _fmt(value: float | None, scale: float = 100.0, width: int = 9, digits: int = 1) -> str:
    if value is None or not np.isfinite(value):
        return f"{'n/a':>{width}}"
    return f"{value * scale:{width}.{digits}f}"


def metric_table(tabular: dict[str, Any], metric: str) -> str:
    """Rows datasets, columns methods, values in percent; a MEAN row last."""
    columns = [*LATENTWATCH_COLUMNS, *BASELINES]
    width = max(12, *(len(name) for name in tabular["datasets"])) + 1
    lines = [f"{metric.upper() + ' (%)':{width}}" + "".join(f"{c:>12}" for c in columns)]
    for name, d in tabular["datasets"].items():
        row = d["mean"]["methods"]
        lines.append(f"{name:{width}}" + "".join(
            _fmt(row[c][metric], width=12) if c in row else f"{'-':>12}" for c in columns))
    mean = tabular["mean"]["methods"]
    lines.append(f"{'MEAN':{width}}" + "".join(
        _fmt(mean[c][metric], width=12) if c in mean else f"{'-':>12}" for c in columns))
    return "\n".join(lines)


def calibration_table(tabular: dict[str, Any]) -> str:
    """Observed false-alarm rates at each alpha and BH's FDR, per dataset and mean."""
    width = max(12, *(len(name) for name in tabular["datasets"])) + 1
    head = "".join(f"{'FAR@' + str(a):>10}" for a in ALPHAS)
    lines = [f"{'calibration':{width}}{'n_cal':>7}{'min_a':>8}{head}{'BH FDR':>9}{'BH pow':>9}"]

    def row(label: str, c: dict[str, Any], n_cal: str, min_alpha: str) -> str:
        rates = "".join(_fmt(c["false_alarm_rate"][str(a)], 1.0, 10, 3) for a in ALPHAS)
        return (f"{label:{width}}{n_cal:>7}{min_alpha:>8}{rates}"
                f"{_fmt(c['bh_fdr'], 1.0, 9, 3)}{_fmt(c['bh_power'], 1.0, 9, 3)}")

    for name, d in tabular["datasets"].items():
        c = d["mean"]["calibration"]
        if c:
            n = c["n_calibration"]
            lines.append(row(name, c, f"{n:.0f}", f"{1.0 / (n + 1):.4f}"))
    if tabular["mean"]["calibration"]:
        lines.append(row("MEAN", tabular["mean"]["calibration"], "", ""))
    return "\n".join(lines)


def group_lines(group: dict[str, Any]) -> list[str]:
    """A group's summary (quality_summary.summarize_group): methods by mean rank, the Wilcoxon
    test of the default against the best baseline, the gap sets, calibration."""
    methods = group["methods"]
    lines = [f"{group['n_datasets']} sets; {'method':14}{'AUROC':>8}{'AUPR':>8}{'rank':>7}"]
    shown = sorted(methods, key=lambda m: (methods[m].get("mean_rank", np.inf), m))
    for m in shown:
        rank = methods[m].get("mean_rank")
        lines.append(f"  {m:24}{_fmt(methods[m]['auroc'], width=8)}"
                     f"{_fmt(methods[m]['aupr'], width=8)}{_fmt(rank, 1.0, 7, 2)}")
    test = group.get("wilcoxon_default_vs_best_baseline")
    if test:
        p = test["p_value"]
        lines.append(f"default vs {group['best_baseline']}: "
                     f"{group['default_minus_best_baseline_auroc_points']:+.1f} AUROC points; "
                     f"wins/losses/ties {test['wins']}/{test['losses']}/{test['ties']}, Wilcoxon "
                     f"signed-rank p = {'n/a' if p is None else f'{p:.3g}'} (n {test['n']})")
    for row in group.get("gap_sets", []):
        lines.append(f"  gap set {row['dataset']:22} default {_fmt(row['default'], width=6)}  "
                     f"{row['best_baseline']} {_fmt(row['best_baseline_auroc'], width=6)}  "
                     f"best here {row['set_best_baseline']} "
                     f"{_fmt(row['set_best_baseline_auroc'], width=6)}")
    c = group.get("calibration")
    if c:
        rates = ", ".join(
            f"alpha {a}: {_fmt(c['false_alarm_rate'][str(a)], 1.0, 1, 3)} over "
            f"{len(c['sets_included'][str(a)])} sets" for a in ALPHAS)
        lines.append(f"false-alarm rate (sets that resolve alpha): {rates}")
        for a in ALPHAS:
            if c["sets_left_out"][str(a)]:
                lines.append(f"  cannot resolve alpha {a}: {', '.join(c['sets_left_out'][str(a)])}")
        lines.append(f"BH at q {c['bh_q']}: mean FDR {_fmt(c['bh_fdr'], 1.0, 1, 3)}, "
                     f"power {_fmt(c['bh_power'], 1.0, 1, 3)} over {c['n_sets']} sets")
    return lines


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    tabular = report.get("tabular")
    if tabular:
        mean = tabular["mean"]
        best = mean["best_baseline"]
        if best is not None and "default" in mean["methods"]:
            lines.append(
                f"mean AUROC: default {100 * mean['methods']['default']['auroc']:.1f}, best "
                f"baseline {best} {100 * mean['methods'][best]['auroc']:.1f}; default - best = "
                f"{mean['default_minus_best_baseline_auroc_points']:+.1f} points (target >= +1.5)"
            )
    for key, image in report.get("images", {}).items():
        shown = ", ".join(f"{k} {image['kinds'][k]['auroc']:.4f}"
                          for k in ("neg_elbo", "iwae_nll") if k in image["kinds"])
        lines.append(f"images {key}: AUROC default ({image['default_kind']}) "
                     f"{image['default']['auroc']:.4f} (target >= 0.99); {shown}")
    return lines


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in ("latentwatch", "pyod", "onnxruntime-gpu", "onnxruntime", "torch", "numpy",
                    "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


# Directory flags are recorded by role, not by where the data happened to lie.
DIRECTORY_FLAGS = {"--adbench-dir": "ADBENCH_DIR", "--images-dir": "IMAGES_DIR"}


def role_command(script: str, argv: list[str]) -> str:
    """`python <script> <argv>`, with the data directories' values named by role."""
    words, previous = ["python", script], ""
    for word in argv:
        flag, eq, _ = word.partition("=")
        if previous in DIRECTORY_FLAGS:
            word = DIRECTORY_FLAGS[previous]
        elif eq and flag in DIRECTORY_FLAGS:
            word = f"{flag}={DIRECTORY_FLAGS[flag]}"
        words.append(word)
        previous = word
    return " ".join(words)


def json_safe(value: Any) -> Any:
    """The report with NaN and infinities as null, so that the file is strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def markdown_lines(report: dict[str, Any]) -> list[str]:
    """README's quality tables from a report: each half present and all sets, per method mean
    AUROC / AUPR / rank; the Wilcoxon line; the gap sets; calibration."""
    tabular = report["tabular"]
    groups = [(f"{h} half", tabular["halves"][h]) for h in ("report", "selection")
              if h in tabular["halves"]]
    groups.append((f"all {tabular['mean']['n_datasets']} sets", tabular["mean"]))
    methods = sorted(tabular["mean"]["methods"],
                     key=lambda m: (tabular["mean"]["methods"][m].get("mean_rank", np.inf), m))
    lines = ["| method | " + " | ".join(f"{label}: AUROC / AUPR / rank" for label, _ in groups)
             + " |", "|---|" + "---|" * len(groups)]
    for m in methods:
        cells = []
        for _, g in groups:
            row = g["methods"].get(m)
            if row is None:
                cells.append("–")
                continue
            rank = row.get("mean_rank")
            rank_text = "–" if rank is None or not np.isfinite(rank) else f"{rank:.2f}"
            cells.append(f"{_fmt(row['auroc'], width=1)} / {_fmt(row['aupr'], width=1)} / "
                         f"{rank_text}")
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    lines.append("")
    for label, g in groups:
        test = g.get("wilcoxon_default_vs_best_baseline")
        if test:
            p = test["p_value"]
            lines.append(f"- {label}: default − {g['best_baseline']} = "
                         f"{g['default_minus_best_baseline_auroc_points']:+.1f} AUROC points, "
                         f"{test['wins']} wins / {test['losses']} losses / {test['ties']} ties, "
                         f"Wilcoxon signed-rank p = {'n/a' if p is None else f'{p:.2g}'}")
    lines += ["", "| gap set | half | default | best baseline (all sets) | best baseline here |",
              "|---|---|---|---|---|"]
    for row in tabular["mean"]["gap_sets"]:
        here = f"{row['set_best_baseline']} {_fmt(row['set_best_baseline_auroc'], width=1)}"
        lines.append(f"| {row['dataset']} | {row['half']} | {_fmt(row['default'], width=1)} | "
                     f"{row['best_baseline']} {_fmt(row['best_baseline_auroc'], width=1)} | "
                     f"{here} |")
    return lines


if __name__ == "__main__":
    import json
    import sys

    with open(sys.argv[1]) as f:
        print("\n".join(markdown_lines(json.load(f))))
