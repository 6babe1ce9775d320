"""benchmarks/k_study.py: a --quick run end to end on tiny synthetic sets (no shared data
needed): one training per set, an export per K and per R, the JSON's structure."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def k_study() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("k_study")


def _write_npz(path: Path, seed: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    normal = rng.normal(size=(300, 6))  # (300, 6)
    anomalous = rng.normal(loc=shift, size=(30, 6))
    np.savez(path, X=np.vstack([normal, anomalous]).astype(np.float32),
             y=np.r_[np.zeros(300), np.ones(30)].astype(np.int64))


def test_exports_leave_out_reference_sizes_at_or_above_the_training_rows(
    k_study: ModuleType,
) -> None:
    args, settings = k_study.parse_args(["--adbench-dir", "d", "--json", "o.json", "--ks", "1,16",
                                         "--reference-rows", "100,8192,20000"])
    assert settings.seeds == (0, 1) and settings.ks == (1, 16)
    # 9 features: the default R is 8192, so R=8192 is the K=1 export itself.
    assert k_study.exports_of(settings, 9, 10_000) == [(1, None), (16, None), (1, 100)]
    assert k_study.exports_of(settings, 9, 100) == [(1, None), (16, None)]
    with pytest.raises(SystemExit):
        k_study.parse_args(["--adbench-dir", "d", "--json", "o.json", "--ks", "0,4"])


def test_quick_run_exports_every_k_and_r_of_one_training(k_study: ModuleType,
                                                           tmp_path: Path) -> None:
    adbench = tmp_path / "adbench"
    adbench.mkdir()
    for i, (name, shift) in enumerate((("a", 4.0), ("b", -5.0), ("c", 5.0))):
        _write_npz(adbench / f"{i + 1}_{name}.npz", seed=i, shift=shift)
    out = tmp_path / "k_study.json"
    argv = ["--adbench-dir", str(adbench), "--json", str(out), "--quick",
            "--reference-rows", "40,5000"]
    assert k_study.main(argv) == 0

    report = json.loads(out.read_text())
    assert "partial" not in report and report["half"] == "selection"
    assert "--adbench-dir ADBENCH_DIR" in report["command"] and str(adbench) not in out.read_text()
    assert report["settings"]["ks"] == [1, 2, 4, 16] and report["settings"]["seeds"] == [0]
    assert report["machine"]["threads"] == 1 and report["versions"]
    assert sorted(report["datasets"]) == ["1_a", "3_c"]  # the selection half only
    for d in report["datasets"].values():
        (seed,) = d["seeds"]
        assert seed["training"]["n_train"] > 40
        exports = seed["exports"]
        # R=5000 is above the training rows: left out; R=40 is exported at K=1.
        assert list(exports) == ["K=1", "K=2", "K=4", "K=16", "K=1,R=40"]
        for e in exports.values():
            assert e["manifest"]["n_importance_samples"] == e["n_importance_samples"]
            stage = e["manifest"]["second_stage"]
            if e["n_reference_rows_asked"] is not None:
                assert stage["n_reference_rows"] == e["n_reference_rows_asked"] == 40
            else:
                assert stage is None or stage["n_reference_rows"] == seed["training"]["n_train"]
            assert e["manifest"]["selection"] is not None  # label-free selection stays on
            assert e["default_kind"] in e["kinds"] and "neg_elbo" in e["kinds"]
            assert 0.0 <= e["default"]["auroc"] <= 1.0 and 0.0 <= e["default"]["aupr"] <= 1.0
            cost = e["cost"]
            assert cost["graph_rows_per_s"] > 0 and cost["default_rows_per_cpu_s"] > 0
            assert cost["default_over_graph"] == pytest.approx(
                cost["default_rows_per_s"] / cost["graph_rows_per_s"])
    summary = report["summary"]
    assert summary["reference"] == "K=16" and summary["n_sets"] == 2
    assert set(summary["exports"]) == {"K=1", "K=2", "K=4", "K=16", "K=1,R=40"}
    reference = summary["exports"]["K=16"]["versus"]
    assert reference["auroc_minus_reference_points"] == 0.0 and reference["graph_speedup"] == 1.0
    assert summary["exports"]["K=1,R=40"]["versus_k1_default_r"]["reference"] == "K=1"
    # K=1 decodes 2 passes per row where K=16 decodes 17: several times faster when measured
    # interleaved, so merely faster holds on a loaded machine too.
    assert summary["exports"]["K=1"]["versus"]["graph_speedup_cpu"] > 1.0
    for e in summary["exports"].values():
        assert 0.0 <= e["auroc"] <= 1.0 and sum(e["chosen"].values()) == 2
