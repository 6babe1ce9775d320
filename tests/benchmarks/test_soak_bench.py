"""benchmarks/soak.py for a few seconds on the exported digits models: windows and slopes."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_short_soak_records_every_window_and_the_slopes(model_repo: Path, tmp_path: Path) -> None:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    soak = importlib.import_module("soak")
    out = tmp_path / "soak.json"
    assert soak.main(["--json", str(out), "--repo", str(model_repo), "--model", "digits-vae",
                      "--duration-s", "4.5", "--window-s", "1.5", "--concurrency", "4",
                      "--threads", "1", "--work-dir", str(tmp_path / "work")]) == 0
    report = json.loads(out.read_text())
    windows = report["windows"]
    assert [w["index"] for w in windows] == [0, 1, 2]
    for window in windows:
        assert 20 < window["rss_mb"] <= window["peak_rss_mb"] + 1 and window["threads"] > 1
        assert window["open_fds"] > 0
        operations = window["operations"]
        assert operations["Score x1"]["calls"] > 0 and operations["Score x1"]["p99_ms"] > 0
    ops = {name: sum(w["operations"][name]["calls"] for w in windows) for name in windows[0]
           ["operations"]}
    assert all(n > 0 for n in ops.values()), ops  # every operation of the mix ran
    unexpected = {name: sum(w["operations"][name]["unexpected"] for w in windows) for name in ops}
    assert not any(unexpected.values()), unexpected
    bad = sum(w["operations"]["bad: not a protobuf"]["errors"].get("INVALID_ARGUMENT", 0)
              for w in windows)
    assert bad == ops["bad: not a protobuf"]
    slopes = report["slopes"]
    assert slopes["windows"] == [1, 2] and isinstance(slopes["rss_mb_per_hour"], float)
    assert set(slopes["p99_ms_per_hour"]) == set(ops)
