"""benchmarks/bias.py: the planted bias, and a --quick run end to end over a real server."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
IMAGES = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def bias_bench() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("bias")


def test_plant_bias_keeps_two_percent_of_one_class(bias_bench: ModuleType) -> None:
    y = np.repeat(np.arange(10), 600)
    keep = bias_bench.plant_bias(y, rare=3, keep=0.02, seed=0)
    kept = y[keep]
    assert (kept == 3).sum() == 12
    assert all((kept == c).sum() == 600 for c in range(10) if c != 3)
    assert np.all(np.diff(keep) > 0)
    assert not np.array_equal(keep, bias_bench.plant_bias(y, rare=3, keep=0.02, seed=1))


@pytest.mark.skipif(not (IMAGES / "fashion-mnist").is_dir() or not (IMAGES / "mnist").is_dir(),
                    reason="needs Fashion-MNIST and MNIST in ../shared/data")
def test_quick_run_measures_every_figure(bias_bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "bias.json"
    assert bias_bench.main(["--images-dir", str(IMAGES), "--json", str(out), "--quick",
                            "--work-dir", str(tmp_path / "work")]) == 0
    results = json.loads(out.read_text())
    planted = results["planted"]["rare8"]
    assert planted["n_rare"] == 12 and 0 < planted["base_rate"] < 0.01
    # Every model (the VAE and a DB-VAE per default mode) under every report density and the
    # baselines; enrichment is at most 1 / base rate.
    assert set(planted["models"]) == {"vae", "dbvae-max", "dbvae-knn"}
    for figures in planted["models"].values():
        assert set(figures) == {"knn", "histogram", "knn@0.5%", "knn@5%"}
        for name in ("knn", "histogram"):
            assert figures[name]["density"] == name
            assert 0 <= figures[name]["enrichment"] <= 1 / planted["base_rate"]
            assert figures[name]["effective_sample_size"] > 1
        # The report's density and the same k over the Encode RPC's means agree.
        assert figures["knn@0.5%"] == pytest.approx(figures["knn"]["enrichment"])
    assert 0 <= planted["pixel_knn@0.5%"] <= 1 / planted["base_rate"]
    debias = results["debias"]["rare8"]
    assert set(debias["modes"]) == {"max", "knn"}
    for mode in debias["modes"].values():
        assert len(debias["per_class_recon_vae"]) == len(mode["per_class_recon_dbvae"]) == 10
        assert np.isfinite(mode["gap_reduction"])
        assert len(mode["per_class_recall_dbvae"]) == 10  # the head trains by default
    drift = results["drift"]
    # Even two epochs on 6,000 rows tell MNIST from Fashion-MNIST.
    assert drift["MNIST test split"]["overall"] > 5 * drift["matched test split"]["overall"]
    assert results["report_60k"]["n_rows"] == 60_000
