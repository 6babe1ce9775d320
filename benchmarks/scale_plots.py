"""PNG plots of throughput.py's scale curves and memory against loaded versions (matplotlib,
headless Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402
from scale_curves import series  # noqa: E402

SCALE_PNG = "throughput-scale.png"
MEMORY_PNG = "throughput-versions-memory.png"


def plot_scale(curves: dict[str, Any], title: str, path: Path) -> Path:
    """rows/s and p99 latency against rows per request, one line per concurrency."""
    fig, (rate_ax, p99_ax) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    for ax, key, label in ((rate_ax, "rows_per_s", "rows/s"),
                           (p99_ax, "latency_p99_ms", "p99 latency (ms)")):
        for concurrency, (xs, ys) in series(curves, key).items():
            ax.plot(xs, ys, marker="o", label=f"{concurrency} callers")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("rows per Score request")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    rate_ax.legend(fontsize="small")
    fig.suptitle(f"{title}; points with more than {curves['max_in_flight_rows']} rows in flight "
                 "left out", fontsize="medium")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_memory(memory: dict[str, Any], title: str, path: Path) -> Path:
    """Server RSS against the number of loaded versions, at SERVING and after scoring each."""
    counts = memory["counts"]
    xs = [c["versions"] for c in counts]
    fig, ax = plt.subplots(figsize=(6, 4.5), constrained_layout=True)
    ax.plot(xs, [c["rss_at_ready_mb"] for c in counts], marker="o", label="at SERVING")
    ax.plot(xs, [c["rss_after_scoring_each_mb"] for c in counts], marker="s",
            label="after one 256-row Score per version")
    ax.set_xlabel("loaded versions")
    ax.set_ylabel("server RSS (MB)")
    ax.set_xticks(xs)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title, fontsize="medium")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
