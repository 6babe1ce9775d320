"""The second stage (numpy): kNN distances, standardisation, scores and its file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentwatch.scoring.knn import KnnIndex
from latentwatch.scoring.second_stage import SecondStage, fit_second_stage, knn_distance


def _brute_knn(reference: np.ndarray, queries: np.ndarray, k: int, skip: int = 0) -> np.ndarray:
    d = np.sqrt(((queries[:, None, :] - reference[None, :, :]) ** 2).sum(-1))
    return np.sort(d, axis=1)[:, skip : skip + k].mean(axis=1)


def test_knn_distance_matches_brute_force_across_chunks() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(300, 7)).astype(np.float32)
    queries = rng.normal(size=(1100, 7)).astype(np.float32)  # more than one chunk
    np.testing.assert_allclose(
        knn_distance(reference, queries, 5), _brute_knn(reference, queries, 5), rtol=1e-4,
        atol=1e-4,
    )
    # Leave-one-out: the queries are the reference rows, each skipping itself.
    np.testing.assert_allclose(
        knn_distance(reference, reference, 3, exclude_self=True),
        _brute_knn(reference, reference, 3, skip=1), rtol=1e-4, atol=1e-4,
    )


def _outputs(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    return {
        "neg_elbo": rng.normal(10.0 + shift, 2.0, size=n).astype(np.float32),
        "recon_error": rng.gamma(2.0, 1.0, size=n).astype(np.float32),
        "latent_mu": rng.normal(shift, 1.0, size=(n, 4)).astype(np.float32),
    }


def test_fit_standardises_the_fit_rows_and_scores_the_most_atypical_statistic() -> None:
    rng = np.random.default_rng(1)
    reference, fit = _outputs(rng, 500), _outputs(rng, 400)
    ref_rows = rng.normal(size=(500, 6)).astype(np.float32)
    fit_rows = rng.normal(size=(400, 6)).astype(np.float32)
    statistics = ("neg_elbo", "log_recon_error", "log_latent_knn", "log_input_knn")
    stage = fit_second_stage(statistics, "max", 5, reference, ref_rows, fit, fit_rows)
    z = (stage.raw_statistics(fit, fit_rows) - stage.mean) / stage.std
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-9)
    np.testing.assert_allclose(stage.score(fit, fit_rows), z.max(axis=1))

    far = _outputs(rng, 50, shift=6.0)  # latents and ELBO far from the normal rows
    far_rows = rng.normal(4.0, 1.0, size=(50, 6)).astype(np.float32)
    assert np.median(stage.score(far, far_rows)) > np.quantile(stage.score(fit, fit_rows), 0.99)


def test_without_fit_rows_the_reference_is_used_leave_one_out() -> None:
    rng = np.random.default_rng(2)
    reference = _outputs(rng, 400)
    rows = rng.normal(size=(400, 3)).astype(np.float32)
    stage = fit_second_stage(("log_input_knn",), "sum", 5, reference, rows, None, None)
    # With self-distances left in, every row would sit at distance ~0 and the mean would be far
    # below that of new rows from the same distribution.
    new = rng.normal(size=(400, 3)).astype(np.float32)
    new_z = stage.score(reference, new)
    assert abs(float(new_z.mean())) < 0.3


def test_saved_stage_loads_without_pickle_and_scores_the_same(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    reference, rows = _outputs(rng, 200), rng.normal(size=(200, 5)).astype(np.float32)
    stage = fit_second_stage(("neg_elbo", "log_input_knn"), "max", 5, reference, rows, None, None)
    path = tmp_path / "second_stage.npz"
    stage.save(path)
    loaded = SecondStage.load(path, stage.statistics, stage.combine, stage.k)
    queries = _outputs(rng, 30)
    query_rows = rng.normal(size=(30, 5)).astype(np.float32)
    expected = stage.score(queries, query_rows)
    np.testing.assert_array_equal(loaded.score(queries, query_rows), expected)


def test_bad_settings_are_refused() -> None:
    zeros = np.zeros((0, 0), np.float32)
    with pytest.raises(ValueError, match="unknown"):
        SecondStage(("nope",), "max", 5, np.zeros(1), np.ones(1), zeros, zeros)
    with pytest.raises(ValueError, match="combine"):
        SecondStage(("neg_elbo",), "mean", 5, np.zeros(1), np.ones(1), zeros, zeros)
    with pytest.raises(ValueError, match="reference rows"):
        SecondStage(("log_input_knn",), "max", 5, np.zeros(1), np.ones(1), zeros, zeros)
    with pytest.raises(ValueError, match="std positive"):
        SecondStage(("neg_elbo",), "max", 5, np.zeros(1), np.zeros(1), zeros, zeros)


def test_the_knn_indexes_are_built_once_with_the_stage_not_per_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loaded stage holds an index for each kNN statistic it uses (none for unused ones);
    scoring batches never builds another."""
    rng = np.random.default_rng(4)
    reference, rows = _outputs(rng, 300), rng.normal(size=(300, 4)).astype(np.float32)
    stage = fit_second_stage(("neg_elbo", "log_input_knn"), "max", 5, reference, rows, None, None)
    assert isinstance(stage.input_index, KnnIndex) and stage.latent_index is None
    assert stage.input_index.n_rows == 300

    def no_build(reference: np.ndarray) -> KnnIndex:
        raise AssertionError("an index was built while scoring")

    monkeypatch.setattr(KnnIndex, "build", no_build)
    queries, query_rows = _outputs(rng, 50), rng.normal(size=(50, 4)).astype(np.float32)
    d = _brute_knn(rows.astype(np.float64), query_rows.astype(np.float64), 5)
    z = (np.log(d + 1e-12) - stage.mean[1]) / stage.std[1]
    z_elbo = (queries["neg_elbo"].astype(np.float64) - stage.mean[0]) / stage.std[0]
    np.testing.assert_allclose(stage.score(queries, query_rows), np.maximum(z, z_elbo),
                               rtol=1e-12)


def test_a_reference_with_a_non_finite_row_is_refused_at_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    reference, rows = _outputs(rng, 100), rng.normal(size=(100, 3)).astype(np.float32)
    stage = fit_second_stage(("neg_elbo", "log_input_knn"), "max", 5, reference, rows, None, None)
    stage.input_reference[7, 1] = np.nan
    path = tmp_path / "second_stage.npz"
    stage.save(path)
    with pytest.raises(ValueError, match="finite"):
        SecondStage.load(path, stage.statistics, stage.combine, stage.k)
