"""benchmarks/protocols.py: a --quick run end to end over real servers, two latentwatch processes
and pytriton's tritonserver, called with unmodified tritonclient."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
ROWS = ("a", "b", "c", "d", "e", "a0", "b0", "e0")
SIZES = {"256x4": (256, 4), "1x64": (1, 64)}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    if (missing := importlib.import_module("processes").triton_missing()) is not None:
        pytest.skip(missing)
    return importlib.import_module("protocols")


def test_quick_run_measures_every_row_and_the_scores_agree(
    bench: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "protocols.json"
    assert bench.main(["--json", str(out), "--quick", "--rounds", "2"]) == 0
    report = json.loads(out.read_text())
    assert report["rounds"] == 2
    for size, (rows, concurrency) in SIZES.items():
        measured = report["measurements"][size]
        assert sorted(measured) == sorted(ROWS)
        for key in ROWS:
            row = measured[key]
            assert row["rows_per_request"] == rows and row["concurrency"] == concurrency, key
            assert row["requests"] > 0 and row["rows_per_s"] > 0, key
            assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"], key
            assert row["cpu"]["benchmark_cores"] > 0, key
            # the figures are the median round's (of two: the slower), every round's kept
            assert len(row["rounds_rows_per_s"]) == 2, key
            assert row["rows_per_s"] == min(row["rounds_rows_per_s"]), key
        ratios = report["ratios"][size]
        for name in ("b_vs_a", "a_vs_e"):  # the median of the ratios within each round
            each = ratios[f"{name}_rounds"]
            assert len(each) == 2 and ratios[name] == pytest.approx(sum(each) / 2), name
        for name, target in report["targets"].items():
            assert ratios[f"{name}_met"] == (ratios[name] >= target)
    agreement = report["agreement"]
    assert agreement["rows"] == 256 and agreement["score_kind"]
    for key in ("b", "c", "d"):  # the latentwatch figures: KServe gRPC, REST, Triton runtime
        assert agreement[key]["scores_close"], agreement[key]
        assert agreement[key]["p_values_equal"] and agreement[key]["is_outlier_equal"], key
    assert agreement["e"]["scores_close"], agreement["e"]  # the graph's own output in Triton
    versions = report["machine"]["versions"]
    assert versions["tritonclient"] and versions["triton_peer"]["nvidia-pytriton"]
