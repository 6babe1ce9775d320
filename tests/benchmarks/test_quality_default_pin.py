"""Pins the statistics behind the default score kind that benchmarks/quality.py measures.

README's quality figures are figures of one definition of the default tabular score: the
negative ELBO and the log mean distance to the 5 nearest training rows in the model's input
space, each standardised with the second stage's mean and std, combined by their maximum
(README, Score kinds). This test trains and exports a small tabular VAE as `latentwatch train`
does, recomputes that definition in plain numpy from the exported scorer graph's raw outputs
(ONNX Runtime directly, no latentwatch scoring code) and the version's files, and requires the
product's default score to equal it. Changing the default's statistics, its combination or k
fails here; a deliberate change must update this oracle and re-measure the README figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PINNED_STATISTICS = ["neg_elbo", "log_input_knn"]
PINNED_COMBINE = "max"
PINNED_K = 5


def _oracle(version_dir: Path, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(default score, standardised statistics (N, 2)) from the version's files alone."""
    import json

    import onnxruntime as ort

    manifest = json.loads((version_dir / "manifest.json").read_text())
    pre = manifest["input"]["preprocessing"]
    shift = np.asarray(pre["shift"], dtype=np.float64)
    scale = np.asarray(pre["scale"], dtype=np.float64)
    model_rows = (rows.astype(np.float64) - shift) * scale  # (N, F)
    if pre.get("clip") is not None:
        model_rows = np.clip(model_rows, *pre["clip"])
    session = ort.InferenceSession(str(version_dir / "scorer.onnx"),
                                   providers=["CPUExecutionProvider"])
    (neg_elbo,) = session.run(["neg_elbo"], {manifest["input"]["name"]: rows.astype(np.float32)})
    with np.load(version_dir / "second_stage.npz", allow_pickle=False) as arrays:
        reference = arrays["input_reference"].astype(np.float64)  # (R, F) model space
        mean, std = arrays["mean"].astype(np.float64), arrays["std"].astype(np.float64)
    distances = np.sqrt(((model_rows[:, None, :] - reference[None, :, :]) ** 2).sum(axis=2))
    knn = np.sort(distances, axis=1)[:, :PINNED_K].mean(axis=1)  # (N,)
    statistics = np.column_stack([neg_elbo.astype(np.float64), np.log(knn + 1e-12)])  # (N, 2)
    z = (statistics - mean) / std
    return z.max(axis=1), z


@pytest.fixture(scope="module")
def tabular_version(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A small tabular VAE trained and exported as the benchmark does, and rows to score."""
    from latentwatch.export.exporter import export_run
    from latentwatch.models.training import TrainConfig, run_training

    root = tmp_path_factory.mktemp("pin")
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(6, 6))
    pool = (rng.normal(size=(400, 6)) @ mixing).astype(np.float32)  # correlated normal rows
    np.save(root / "pool.npy", pool, allow_pickle=False)
    run_training(TrainConfig(data=str(root / "pool.npy"), model="vae", out=root / "run",
                             seed=0, epochs=3, progress=False))
    version_dir = export_run(root / "run", root / "repo", "pin")
    test = np.vstack([rng.normal(size=(40, 6)) @ mixing, rng.normal(size=(10, 6)) * 4.0 + 3.0])
    return version_dir, test.astype(np.float32)


def test_default_kind_is_the_pinned_second_stage(tabular_version: tuple[Path, np.ndarray]) -> None:
    from latentwatch.repository.manifest import Manifest

    version_dir, _ = tabular_version
    scoring = Manifest.read(version_dir).require_scoring()
    assert scoring.default_score_kind == "stats_density"
    assert scoring.second_stage is not None
    assert scoring.second_stage.statistics == PINNED_STATISTICS
    assert scoring.second_stage.combine == PINNED_COMBINE
    assert scoring.second_stage.k == PINNED_K


def test_default_score_equals_the_numpy_oracle(tabular_version: tuple[Path, np.ndarray]) -> None:
    from latentwatch.service.offline import OfflineScorer

    version_dir, test = tabular_version
    scorer = OfflineScorer.from_version_dir(version_dir)
    product = scorer.score(test)[scorer.default_score_kind]
    expected, z = _oracle(version_dir, test)
    np.testing.assert_allclose(product, expected, rtol=1e-4, atol=1e-4)
    # The oracle discriminates: both statistics decide some rows, and a different combination
    # (their sum) or either statistic alone would not pass the comparison above.
    assert len(set(z.argmax(axis=1))) == 2
    for other in (z.sum(axis=1), z[:, 0], z[:, 1]):
        assert np.abs(other - product).max() > 1e-2
