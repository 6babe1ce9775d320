"""benchmarks/generators.py: its Fréchet distance, and a tiny run end to end over a real server."""

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
def bench() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("generators")


def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift(bench: ModuleType) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 8))
    assert bench.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = bench.frechet_distance(a, a + 1.0)  # mean shift of 1 in 8 dimensions: about 8
    assert 7.5 < shifted < 8.5
    assert bench.frechet_distance(a, 3 * a) == pytest.approx(8 * (3 - 1) ** 2, rel=0.1)


@pytest.mark.skipif(not (IMAGES / "mnist").is_dir(), reason="needs MNIST in ../shared/data")
def test_tiny_run_measures_every_figure(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "out" / "generators.json"
    assert bench.main(["--images-dir", str(IMAGES), "--json", str(out), "--quick",
                       "--max-rows", "300", "--epochs", "1", "--classifier-epochs", "1",
                       "--fd-samples", "300",
                       "--work-dir", str(tmp_path / "work")]) == 0
    r = json.loads(out.read_text())["datasets"]["mnist"]
    assert 0.0 <= r["cgan"]["label_share"] <= 1.0 and len(r["cgan"]["per_class"]) == 10
    assert r["cgan"]["cas_score"] > 0
    assert all(np.isfinite(r["fd"][k]["fd"]) for k in ("gan", "cgan", "vae"))
    assert r["fd"]["real_train_floor"] >= 0
    p = r["pix2pix"]
    assert p["n_pairs"] == 30 and p["l1"] > 0 and set(p["baselines"]) == {"edge_map", "mean_image"}
    assert set(r["traversal"]) == {"beta1", "beta2", "beta4"}
    assert all(0.0 < t["active"] <= t["latent_dim"] for t in r["traversal"].values())
    assert r["throughput_cgan"]["grpc_samples_per_s"] > 0
    grids = sorted(p.name for p in out.parent.glob("*.png"))
    assert {"mnist-cgan.png", "mnist-cgan-by-class.png", "mnist-gan.png", "mnist-vae.png",
            "mnist-pix2pix.png"} <= set(grids) == set(json.loads(out.read_text())["grids"])
