"""benchmarks/quality.py: its split, metrics and calibration pieces, and a --quick run end to end
on tiny synthetic tabular sets and tiny synthetic IDX images (no shared data needed)."""

from __future__ import annotations

import gzip
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _bench_module(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module (the benchmark's modules import their siblings)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def quality() -> ModuleType:
    """benchmarks/quality.py: the command line and its run."""
    return _bench_module("quality")


@pytest.fixture(scope="module")
def quality_split() -> ModuleType:
    return _bench_module("quality_split")


@pytest.fixture(scope="module")
def quality_metrics() -> ModuleType:
    return _bench_module("quality_metrics")


def _labelled(n_normal: int, n_anomaly: int) -> tuple[np.ndarray, np.ndarray]:
    """X whose first column is the row index, so rows can be traced through a split."""
    n = n_normal + n_anomaly
    X = np.column_stack([np.arange(n, dtype=np.float64), np.zeros(n)])  # (N, 2)
    y = np.r_[np.zeros(n_normal, np.int64), np.ones(n_anomaly, np.int64)]
    return X, np.random.default_rng(7).permutation(y)


def test_clean_train_split_trains_on_half_the_normals_and_tests_on_the_rest(
    quality_split: ModuleType,
) -> None:
    X, y = _labelled(101, 12)
    split = quality_split.clean_train_split(X, y, seed=0)
    pool_ids = split.pool[:, 0].astype(int)
    test_ids = split.test[:, 0].astype(int)
    assert (y[pool_ids] == 0).all()  # clean training: no anomaly in the pool
    assert len(pool_ids) == 50 and len(test_ids) == 51 + 12
    assert not set(pool_ids) & set(test_ids)
    assert set(pool_ids) | set(test_ids) == set(range(len(y)))  # every row used once
    np.testing.assert_array_equal(split.y_test, y[test_ids])
    again = quality_split.clean_train_split(X, y, seed=0)
    np.testing.assert_array_equal(again.pool, split.pool)
    other = quality_split.clean_train_split(X, y, seed=1)
    assert set(other.pool[:, 0].astype(int)) != set(pool_ids)


def test_clean_train_split_caps_keep_the_anomaly_fraction(quality_split: ModuleType) -> None:
    X, y = _labelled(2000, 100)
    split = quality_split.clean_train_split(X, y, seed=3, max_train_rows=300, max_test_rows=220)
    assert split.pool.shape[0] == 300 and split.n_pool_uncapped == 1000
    assert split.test.shape[0] == 220 and split.n_test_uncapped == 1100
    assert int(split.y_test.sum()) == 20  # 100 / 1100 of 220
    assert not set(split.pool[:, 0].astype(int)) & set(split.test[:, 0].astype(int))


def test_detection_metrics(quality_metrics: ModuleType) -> None:
    y = np.array([0, 0, 0, 1, 1])
    perfect = quality_metrics.detection_metrics(y, np.array([0.1, 0.2, 0.3, 0.8, 0.9]))
    assert perfect == {"auroc": 1.0, "aupr": 1.0}
    assert quality_metrics.detection_metrics(y, np.array([5.0, 4, 3, 2, 1]))["auroc"] == 0.0
    # +inf ranks above every finite score instead of breaking the metric.
    with_inf = quality_metrics.detection_metrics(y, np.array([0.1, 0.2, 0.3, 0.8, np.inf]))
    assert with_inf["auroc"] == 1.0
    assert np.isnan(quality_metrics.detection_metrics(y, np.array([0.1, np.nan, 0, 1, 1]))["auroc"])


def test_calibration_metrics_counts_false_alarms_and_false_discoveries(
    quality_metrics: ModuleType,
) -> None:
    # 10 normals: one p at 0.01, one at 0.04, the rest large; 5 anomalies with tiny p-values.
    p_normal = np.array([0.01, 0.04, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 1.0])
    p_anomaly = np.full(5, 0.001)
    y = np.r_[np.zeros(10, np.int64), np.ones(5, np.int64)]
    c = quality_metrics.calibration_metrics(y, np.r_[p_normal, p_anomaly], n_calibration=999)
    assert c["false_alarm_rate"] == {"0.01": 0.1, "0.05": 0.2, "0.1": 0.2}
    assert c["min_alpha"] == pytest.approx(1e-3)
    # BH at q = 0.1 over m = 15: the 7th smallest p (0.04) <= 0.1 * 7 / 15 and the 8th (0.5)
    # is not, so the 7 smallest are discoveries, 2 of them normal.
    assert c["bh"]["discoveries"] == 7 and c["bh"]["false_discoveries"] == 2
    assert c["bh"]["fdr"] == pytest.approx(2 / 7)
    assert c["bh"]["power"] == 1.0


def test_pca_baseline_scores_a_rank_deficient_pool(quality_metrics: ModuleType) -> None:
    """PyOD's default PCA scores every row inf when a column is a copy of another."""
    pytest.importorskip("pyod", reason="the baselines need pyod, in the `bench` extra")
    from quality_baselines import run_baselines

    rng = np.random.default_rng(0)
    base = rng.normal(size=(400, 4))  # (400, 4)
    X = np.column_stack([base, base[:, 0]])  # (400, 5), rank 4
    test = np.vstack([X[300:], X[300:320] + 6.0])  # 100 normal rows, 20 shifted
    y = np.r_[np.zeros(100), np.ones(20)]
    (result,) = run_baselines(X[:300], test, seed=0, names=["pca"]).values()
    assert result.scores is not None and np.isfinite(result.scores).all()
    assert result.note is not None and "n_components=4" in result.note
    assert quality_metrics.detection_metrics(y, result.scores)["auroc"] > 0.9


def _write_npz(path: Path, seed: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    normal = rng.normal(size=(300, 6))  # (300, 6)
    anomalous = rng.normal(loc=shift, size=(30, 6))
    np.savez(path, X=np.vstack([normal, anomalous]).astype(np.float32),
             y=np.r_[np.zeros(300), np.ones(30)].astype(np.int64))


def _write_idx(path: Path, images: np.ndarray) -> None:
    """An MNIST-format IDX3 .gz file of (N, H, W) uint8 images."""
    n, height, width = images.shape
    header = b"".join(v.to_bytes(4, "big") for v in (2051, n, height, width))
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())


def _images(rng: np.random.Generator, n: int, corner: int) -> np.ndarray:
    """28x28 noise with a bright 10x10 square in the top-left (0) or bottom-right (1) corner."""
    images = rng.integers(0, 40, size=(n, 28, 28))
    at = slice(2, 12) if corner == 0 else slice(16, 26)
    images[:, at, at] = 230
    return images


def test_quick_run_writes_the_report(quality: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("pyod", reason="the baselines need pyod, in the `bench` extra")
    adbench = tmp_path / "adbench"
    adbench.mkdir()
    _write_npz(adbench / "1_shifted.npz", seed=0, shift=4.0)
    _write_npz(adbench / "2_shifted_down.npz", seed=1, shift=-5.0)
    rng = np.random.default_rng(0)
    for name, corner in (("mnist", 0), ("fashion-mnist", 1)):
        _write_idx(tmp_path / "images" / name / "train-images-idx3-ubyte.gz",
                   _images(rng, 300, corner))
        _write_idx(tmp_path / "images" / name / "t10k-images-idx3-ubyte.gz",
                   _images(rng, 60, corner))
    out = tmp_path / "quality.json"
    argv = ["--adbench-dir", str(adbench), "--images-dir", str(tmp_path / "images"),
            "--json", str(out), "--quick", "--max-image-train-rows", "300"]
    assert quality.main(argv) == 0

    report = json.loads(out.read_text())
    assert report["caps"]["max_train_rows"] == 2000 and report["seeds"] == [0]
    assert report["versions"]["pyod"] and report["total_s"] > 0
    assert "partial" not in report and report["half"] == "all"
    assert "--adbench-dir ADBENCH_DIR" in report["command"]
    assert str(adbench) not in report["command"] and "IMAGES_DIR" in report["command"]
    assert report["deviations"]["pyod_vae"].startswith("epochs: 2 (PyOD default 30)")
    assert report["tabular"]["halves"]["selection"]["datasets"] == ["1_shifted"]
    assert report["tabular"]["datasets"]["2_shifted_down"]["half"] == "report"
    datasets = report["tabular"]["datasets"]
    assert sorted(datasets) == ["1_shifted", "2_shifted_down"]
    for d in datasets.values():
        (seed,) = d["seeds"]
        assert seed["n_pool"] == 150 and seed["n_test"] == 180
        methods = seed["methods"]
        assert set(methods) == {"default", "neg_elbo", "recon_error", "knn", "lof", "ocsvm",
                                "iforest", "pca", "ecod", "pyod_vae", "dte_np"}
        for m in methods.values():
            assert 0.0 <= m["auroc"] <= 1.0 and 0.0 <= m["aupr"] <= 1.0 and m["seconds"] >= 0
        lw = seed["latentwatch"]
        assert lw["default_kind"] in lw["kinds"]
        assert {"neg_elbo", "iwae_nll", "recon_error", "kl"} <= set(lw["kinds"])
        # Anomalies 4-5 standard deviations away: anything that works separates them.
        assert methods["default"]["auroc"] > 0.9 and methods["knn"]["auroc"] > 0.9
        calibration = seed["calibration"]
        assert calibration["n_calibration"] == lw["training"]["n_calibration"] == 30
        assert set(calibration["false_alarm_rate"]) == {"0.01", "0.05", "0.1"}
        assert 0.0 <= calibration["bh"]["fdr"] <= 1.0
    mean = report["tabular"]["mean"]
    assert mean["best_baseline"] in {"knn", "lof", "ocsvm", "iforest", "pca", "ecod", "pyod_vae",
                                     "dte_np"}
    assert isinstance(mean["default_minus_best_baseline_auroc_points"], float)
    assert set(report["images"]) == {"fashion-mnist->mnist", "mnist->fashion-mnist"}
    for image in report["images"].values():
        assert image["n_test_normal"] == image["n_test_outlier"] == 60
        assert 0.0 <= image["default"]["auroc"] <= 1.0
        assert {"neg_elbo", "iwae_nll"} <= set(image["kinds"])
