"""benchmarks/large_files.py --quick: both files scored end to end, figures written."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_quick_run_scores_both_files_in_bounded_memory(tmp_path: Path) -> None:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    bench = importlib.import_module("large_files")
    out = tmp_path / "large.json"
    assert bench.main(["--json", str(out), "--quick", "--work-dir", str(tmp_path / "work")]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["file"] for r in results] == ["large.csv", "large.parquet"]
    assert results[1]["rows"] == 20_000 and results[0]["rows"] > 5000
    assert all(r["rows_per_s"] > 0 and 0 < r["peak_rss_mb"] < 300 for r in results)
