"""benchmarks/explain_cost.py for a moment on the exported digits-vae: every mode measured."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_short_run_measures_every_mode_and_the_ratios(model_repo: Path, tmp_path: Path) -> None:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    explain_cost = importlib.import_module("explain_cost")
    out = tmp_path / "explain_cost.json"
    assert explain_cost.main(["--json", str(out), "--repo", str(model_repo), "--rounds", "2",
                              "--duration-s", "0.5", "--warmup-s", "0.2", "--concurrency", "2",
                              "--cpu-calls", "2",
                              "--work-dir", str(tmp_path / "work")]) == 0
    report = json.loads(out.read_text())
    assert set(report["median"]) == {"off", "top5", "all"}
    assert all(report["median"][m]["server_cpu_ms_per_row"] > 0 for m in report["median"])
    assert set(report["cpu_ratio_vs_off"]) == {"top5", "all"}
    assert len(report["per_round"]) == 2
    for figures in report["per_round"]:
        assert all(figures[m]["requests"] > 0 for m in ("off", "top5", "all"))
    for mode in ("top5", "all"):
        per_round = [r[mode]["rows_per_s"] / r["off"]["rows_per_s"] for r in report["per_round"]]
        assert min(per_round) <= report["ratio_vs_off"][mode] <= max(per_round)
