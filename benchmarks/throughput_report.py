"""throughput.py's ratios, targets and printed table (Markdown, as the README shows it)."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

# Each ratio: (numerator row, denominator row, target it must reach).
RATIOS = {
    "service_vs_raw_ort": ("b", "a", 0.95),
    "single_row_vs_grpc_floor": ("c", "d", 0.8),
    "service_vs_pyod": ("b", "e", 1.5),
    "tabular_default_vs_graph_only": ("g", "h", 0.5),
}
LIMITS = {"server_peak_rss_mb": 500, "default_repo_ready_s": 5}


def ratio(num: dict, den: dict) -> float | None:
    if "rows_per_s" not in num or "rows_per_s" not in den:
        return None
    return float(num["rows_per_s"] / den["rows_per_s"])


def ratios(measurements: dict[str, Any]) -> dict[str, float | None]:
    return {name: ratio(measurements[n], measurements[d]) for name, (n, d, _) in RATIOS.items()}


def targets() -> dict[str, float]:
    return {**{name: target for name, (_, _, target) in RATIOS.items()}, **LIMITS}


def machine(threads: int) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in ("latentwatch", "onnxruntime-gpu", "grpcio", "numpy", "protobuf", "torch",
                    "pyod", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads": threads,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
        "loadavg": list(os.getloadavg()),
    }


def _row_line(key: str, row: dict[str, Any]) -> str:
    if "rows_per_s" not in row:
        return f"| ({key}) skipped: {row.get('skipped')} | | | | |"
    return (f"| ({key}) {row['what']} | {row['rows_per_s']:,.0f} | {row['latency_p50_ms']:,.1f} "
            f"| {row['latency_p99_ms']:,.1f} | {row['cpu']['other_cores']:.2f} |")


def table(report: dict[str, Any]) -> str:
    """The measurements, ratios against targets, memory and the scale curves' summary."""
    m = report["measurements"]
    lines = ["| measurement | rows/s | p50 ms | p99 ms | other work, cores |",
             "|---|---:|---:|---:|---:|"]
    lines += [_row_line(key, m[key]) for key in "abcdegh"]
    lines += ["", "| ratio | measured | target | met |", "|---|---:|---:|---|"]
    for name, (num, den, target) in RATIOS.items():
        value = report["ratios"][name]
        shown = "n/a" if value is None else f"{value:.2f}"
        met = "n/a" if value is None else ("yes" if value >= target else "no")
        lines.append(f"| {name} ({num}/{den}) | {shown} | >= {target} | {met} |")
    ceiling = report["ceilings"]["single_row_vs_grpc_floor"]
    if ceiling is not None:
        lines.append(f"| compute ceiling of c/d: a/d | {ceiling:.2f} | | |")
    lines += ["", "| loaded versions | RSS at SERVING, MB | RSS after scoring each, MB |",
              "|---:|---:|---:|"]
    for count in m["versions_memory"]["counts"]:
        lines.append(f"| {count['versions']} | {count['rss_at_ready_mb']:,.0f} "
                     f"| {count['rss_after_scoring_each_mb']:,.0f} |")
    f = m["f"]
    default_ready = f["default_repo_ready_s"]
    lines += ["", f"server peak RSS during (b)-(c): {f['server_peak_rss_mb']:.0f} MB "
              f"(limit {LIMITS['server_peak_rss_mb']} MB); start to SERVING: "
              + (f"{default_ready:.2f} s on the default repository" if default_ready else
                 f"skipped ({f['default_repo_skipped']})")
              + f", {f['fmnist_server_ready_s']:.2f} s on {report['model']['name']}"]
    best = report["scale"]["summary"]["most_rows_per_s"]
    others = [p["cpu"]["other_cores"] for p in report["scale"]["points"]]
    lines.append(f"scale curves: {len(report['scale']['points'])} points; most rows/s "
                 f"{best['rows_per_s']:,.0f} at {best['rows_per_request']} rows x "
                 f"{best['concurrency']} callers (p99 {best['latency_p99_ms']:,.0f} ms); other "
                 f"work took {min(others):.2f} to {max(others):.2f} cores meanwhile")
    lines += [f"note: {note}" for note in report["notes"]]
    lines += [f"plot: {path}" for path in report["plots"].values()]
    return "\n".join(lines)
