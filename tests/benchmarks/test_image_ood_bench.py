"""benchmarks/image_ood.py --k-values: one tiny trained run exported once per K, every
direction reported per K with each K's cost; without it, the figures keep their old shape."""

from __future__ import annotations

import gzip
import importlib
import json
import struct
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from latentwatch.models.defaults import default_n_importance_samples
from latentwatch.repository.manifest import Manifest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("image_ood")


def _write_idx(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(struct.pack(">IIII", 2051, n, h, w)
                                   + images.astype(np.uint8).tobytes()))


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny image sets in the IDX layout the benchmark reads: bright squares, thin bars."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, (rows, cols) in {"fashion-mnist": (slice(6, 22), slice(6, 22)),
                               "mnist": (slice(2, 26), slice(12, 16))}.items():
        for file, n in (("train-images-idx3-ubyte.gz", 300), ("t10k-images-idx3-ubyte.gz", 60)):
            images = rng.integers(0, 30, size=(n, 28, 28))
            images[:, rows, cols] += rng.integers(150, 225, size=(n, 1, 1))
            _write_idx(root / name / file, images)
    return root


def test_each_k_exports_the_same_run_and_reports_every_direction(
    bench: ModuleType, images_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "COST_WARMUP_S", 0.0)
    monkeypatch.setattr(bench, "COST_DURATION_S", 0.05)
    monkeypatch.setattr(bench, "COST_ROUNDS", 2)
    work, out = tmp_path / "work", tmp_path / "k.json"
    common = ["--images-dir", str(images_dir), "--work", str(work), "--inliers",
              "fashion-mnist", "--epochs", "1", "--n-test", "40"]
    assert bench.main([*common, "--k-values", "2,1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["k_values"] == [1, 2]
    result = report["per_seed"]["0"]
    for direction in ("fashion-mnist->mnist", "fashion-mnist->noise"):
        by_k = result[direction]
        assert set(by_k) == {"k1", "k2"}
        assert all(0.0 <= v <= 1.0 for aurocs in by_k.values() for v in aurocs.values())
        # recon_error decodes z = mu once: the same trained model gives it at any K
        assert by_k["k1"]["recon_error"] == by_k["k2"]["recon_error"]
        assert report["mean_auroc"][direction] == by_k  # one seed: the means are its figures
    model = result["fashion-mnist:model"]
    assert model["run_n_importance_samples"] == default_n_importance_samples(is_image=True)
    assert model["training"]["epochs_run"] == 1
    for k in (1, 2):
        manifest = Manifest.read(work / "repo" / f"fashion-mnist-s0-k{k}" / "1")
        assert manifest.latent is not None and manifest.latent.n_importance_samples == k
        cost = model[f"k{k}"]
        assert cost["export_s"] > 0 and len(cost["scorer_rows_per_s_rounds"]) == 2
        assert cost["scorer_rows_per_s"] == float(np.median(cost["scorer_rows_per_s_rounds"]))
        assert report["cost_by_k"]["fashion-mnist"][f"k{k}"] == {
            "export_s": cost["export_s"], "scorer_rows_per_s": cost["scorer_rows_per_s"]}

    merged = tmp_path / "merged.json"  # --merge keeps the per-K shape and its summaries
    assert bench.main(["--json", str(merged), "--merge", str(out)]) == 0
    again = json.loads(merged.read_text())
    assert again["mean_auroc"] == report["mean_auroc"]
    assert again["cost_by_k"] == report["cost_by_k"]

    # Without --k-values: the run (reused) exported once at its own K, the old shape.
    assert bench.main([*common, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "k_values" not in report["settings"] and "cost_by_k" not in report
    aurocs = report["per_seed"]["0"]["fashion-mnist->mnist"]
    assert isinstance(aurocs["served_default"], float)
    assert report["per_seed"]["0"]["fashion-mnist:model"]["training"]["reused"] is True
    manifest = Manifest.read(work / "repo" / "fashion-mnist-s0" / "1")
    assert manifest.latent is not None
    assert manifest.latent.n_importance_samples == default_n_importance_samples(is_image=True)


@pytest.mark.parametrize("text", ["", "1,x", "0,4", "-1"])
def test_k_values_refuses_what_is_not_a_positive_integer_list(bench: ModuleType,
                                                              text: str) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--images-dir", "x", "--json", "y", "--k-values", text])
