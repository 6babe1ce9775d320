"""benchmarks/throughput.py --quick end to end over real servers: every row, ratio, scale point
and memory figure is measured and positive, and the plots are PNG files."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
LOAD_ROWS = "bcdgh"  # closed-loop rows; (a) and (e) are one caller in process
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("throughput")


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _check_row(key: str, row: dict) -> None:
    assert row["requests"] > 0 and row["duration_s"] > 0, key
    for name in ("rows_per_s", "requests_per_s", "latency_p50_ms", "latency_p99_ms",
                 "latency_mean_ms"):
        if name in row:
            assert _positive(row[name]), (key, name, row[name])
    assert row["latency_p50_ms"] <= row["latency_p99_ms"], key
    assert row["cpu"]["benchmark_cores"] > 0 and row["cpu"]["other_cores"] >= 0, key
    assert row["rows_per_s"] == pytest.approx(
        row["requests"] * row["rows_per_request"] / row["duration_s"]), key


@pytest.mark.slow  # trains a Fashion-MNIST VAE, a tabular VAE and PyOD's VAE, briefly
def test_quick_run_measures_every_figure(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results" / "throughput.json"
    assert bench.main(["--json", str(out), "--quick", "--threads", "2"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    m = report["measurements"]

    for key in "abcdegh":
        if "skipped" in m[key]:
            pytest.fail(f"({key}) skipped: {m[key]['skipped']}")
        _check_row(key, m[key])
        assert f"| ({key}) {m[key]['what']} | " in printed, key  # the table shows every row
    assert (m["b"]["rows_per_request"], m["b"]["concurrency"]) == (256, 4)
    assert (m["c"]["rows_per_request"], m["c"]["concurrency"]) == (1, 64)
    assert m["d"]["rows_per_request"] == 1 and m["d"]["request_bytes"] > 0
    assert m["e"]["deterministic"] is False  # PyOD's VAE draws at random; the table says so
    assert any("random draw" in note for note in report["notes"])
    # the tabular pair: the model's default kind against the graph-only neg_elbo
    assert m["g"]["score_kind"] == report["tabular"]["default_score_kind"] != "neg_elbo"
    assert m["h"]["score_kind"] == "neg_elbo"
    for key in ("g", "h"):
        assert m[key]["rows_per_request"] == 256 and len(m[key]["rounds_rows_per_s"]) == 2

    for name, value in report["ratios"].items():
        num, den, target = bench.report_of.RATIOS[name]
        assert value == pytest.approx(m[num]["rows_per_s"] / m[den]["rows_per_s"]), name
        assert report["targets"][name] == target
    assert report["targets"]["service_vs_raw_ort"] == 0.95

    f = m["f"]
    assert _positive(f["server_peak_rss_mb"]) and _positive(f["fmnist_server_ready_s"])
    assert f["default_repo_ready_s"] is None and "--quick" in f["default_repo_skipped"]

    memory = m["versions_memory"]
    assert [c["versions"] for c in memory["counts"]] == [1, 3]
    for count in memory["counts"]:
        assert all(_positive(count[k]) for k in ("rss_at_ready_mb", "rss_after_scoring_each_mb",
                                                  "ready_s", "score_each_s")), count
    assert memory["counts"][1]["repository_mb"] == pytest.approx(
        3 * memory["counts"][0]["repository_mb"], rel=0.01)

    scale = report["scale"]
    cap = scale["max_in_flight_rows"]
    expected = [(b, c) for b in scale["batch_sizes"] for c in scale["concurrencies"]
                if b * c <= cap]
    assert [(p["rows_per_request"], p["concurrency"]) for p in scale["points"]] == expected
    assert len(scale["left_out"]) == (len(scale["batch_sizes"]) * len(scale["concurrencies"])
                                      - len(expected)) > 0
    # set explicitly: room for every row in flight, and the largest request in one window
    assert scale["server_max_queue_rows"] >= 2 * max(cap, max(scale["batch_sizes"]))
    assert scale["server_max_concurrent_rpcs"] > max(scale["concurrencies"])
    for point in scale["points"]:
        _check_row(f"{point['rows_per_request']}x{point['concurrency']}", point)
    best = scale["summary"]["most_rows_per_s"]
    assert best["rows_per_s"] == max(p["rows_per_s"] for p in scale["points"])

    assert set(report["plots"]) == {"scale", "versions_memory"}
    for path in report["plots"].values():
        png = Path(path)
        assert png.parent == out.parent and png.read_bytes()[:8] == PNG_MAGIC
        assert png.stat().st_size > 10_000  # axes, lines and labels, not an empty canvas
    assert report["machine"]["versions"]["matplotlib"]
