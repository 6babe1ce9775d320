"""The bias report's k-nearest-neighbour density (latentwatch.bias.density.knn_log_density)."""

from __future__ import annotations

import math
import time
import tracemalloc

import numpy as np
import pytest

from latentwatch.bias.accumulator import BiasAccumulator, BiasReport
from latentwatch.bias.density import (
    KNN_BLOCK_ENTRIES,
    KNN_FRACTION,
    KNN_WEIGHT_FRACTION,
    KNN_WEIGHT_POWER,
    effective_sample_size,
    knn_log_density,
    resampling_log_weights,
)
from latentwatch.bias.options import BiasOptions
from latentwatch.errors import InvalidInput


def _axis_clusters(
    n: int = 6000, rare_share: float = 0.03, z: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Common rows in 2z clusters at +-3 on each axis, rare rows in one cluster of the same width
    at the origin. Each marginal peaks at 0 (2z - 2 of the common clusters sit there), so the rare
    cluster is in the middle of every marginal, while in the joint space it holds a quarter of the
    rows a common cluster holds in the same volume."""
    rng = np.random.default_rng(seed)
    is_rare = rng.random(n) < rare_share
    centres = np.concatenate([3.0 * np.eye(z), -3.0 * np.eye(z)])
    mu = rng.normal(scale=0.5, size=(n, z)) + centres[rng.integers(0, 2 * z, n)]
    mu[is_rare] = rng.normal(scale=0.5, size=(int(is_rare.sum()), z))
    return mu.astype(np.float32), is_rare


def _report(mu: np.ndarray, is_rare: np.ndarray, **options: object) -> BiasReport:
    acc = BiasAccumulator(mu.shape[1], max_rows=10**7)
    acc.add(mu, groups={"cluster": np.where(is_rare, "rare", "common").tolist()})
    return acc.finish(BiasOptions(**options), None)  # type: ignore[arg-type]


def _rare(report: BiasReport):  # type: ignore[no-untyped-def]
    return next(g for g in report.groups if g.value == "rare")


def test_a_rare_cluster_in_the_middle_of_every_marginal_is_flagged() -> None:
    mu, is_rare = _axis_clusters()
    knn = _rare(_report(mu, is_rare))  # the default density
    assert knn.flagged and knn.representation_ratio > 3.0
    # The DB-VAE's product of marginal histograms calls the rare cluster the densest region.
    histogram = _rare(_report(mu, is_rare, density="histogram"))
    assert histogram.representation_ratio < 0.5
    assert not (histogram.flagged and histogram.representation_ratio > 1)


def test_the_histogram_density_is_still_the_paper_product_and_weights_do_not_change() -> None:
    mu, is_rare = _axis_clusters(2000)
    knn, histogram = _report(mu, is_rare), _report(mu, is_rare, density="histogram")
    log_density, log_weight = resampling_log_weights(mu)
    np.testing.assert_allclose(histogram.log_density, log_density, rtol=1e-12)
    np.testing.assert_allclose(knn.weight, histogram.weight, rtol=1e-12)
    np.testing.assert_allclose(knn.weight, np.exp(log_weight) * len(mu), rtol=1e-9)
    assert not np.allclose(knn.log_density, histogram.log_density)
    lowest = np.argsort(knn.log_density, kind="stable")[: len(knn.sparsest)]
    np.testing.assert_array_equal(knn.sparsest, lowest)


def _digamma(j: int) -> float:
    return -0.5772156649015329 + sum(1.0 / i for i in range(1, j))


def test_matches_the_estimate_written_out_with_every_pairwise_distance() -> None:
    rng = np.random.default_rng(1)
    mu = rng.normal(size=(800, 3)) * [1.0, 0.3, 2.0]
    mu[10] = mu[11] = mu[12]  # duplicated means: distance 0 is floored, the density finite
    got = knn_log_density([mu[:333], mu[333:]], len(mu))
    distance = np.sqrt(((mu[:, None, :] - mu[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(distance, np.inf)
    k = round(KNN_FRACTION * len(mu))
    near = np.maximum(np.sort(distance, axis=1)[:, :k], 1e-6 * np.sqrt(mu.var(axis=0).sum()))
    log_ball = 1.5 * math.log(math.pi) - math.lgamma(2.5)
    expected = (np.mean([_digamma(j) for j in range(1, k + 1)]) - np.log(len(mu) - 1)
                - log_ball - 3 * np.log(near).mean(axis=1))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert np.isfinite(got).all()


def test_the_estimate_is_a_log_density() -> None:
    # Standard normal means in 3 dimensions: the estimate follows the true log density.
    mu = np.random.default_rng(2).normal(size=(6000, 3))
    got = knn_log_density([mu], len(mu))
    true = -0.5 * (mu**2).sum(axis=1) - 1.5 * math.log(2 * math.pi)
    core = (mu**2).sum(axis=1) < 4.0
    assert abs(float(np.mean(got[core] - true[core]))) < 0.25
    assert np.corrcoef(got, true)[0, 1] > 0.85


def test_deterministic_and_the_same_however_the_rows_are_chunked() -> None:
    mu, _ = _axis_clusters(9000)
    whole = knn_log_density([mu], len(mu), max_reference_rows=2048)  # a seeded sample
    again = knn_log_density([mu], len(mu), max_reference_rows=2048)
    chunked = knn_log_density([mu[:1], mu[1:4999], mu[4999:]], len(mu), max_reference_rows=2048)
    np.testing.assert_array_equal(whole, again)
    np.testing.assert_array_equal(whole, chunked)
    other_sample = knn_log_density([mu], len(mu), max_reference_rows=2048, seed=1)
    assert not np.array_equal(whole, other_sample)


def test_a_sampled_reference_ranks_rows_like_every_row_does() -> None:
    mu, is_rare = _axis_clusters(8000)
    every_row = knn_log_density([mu], len(mu), max_reference_rows=len(mu))  # k = 40
    sampled = knn_log_density([mu], len(mu), max_reference_rows=2000)  # k = 10 of 2,000
    ranks = [np.argsort(np.argsort(x)) for x in (every_row, sampled)]
    assert np.corrcoef(ranks[0], ranks[1])[0, 1] > 0.9
    for rank in ranks:  # in both, about a third of the rare rows are among the sparsest tenth
        assert np.mean(rank[is_rare] < 0.1 * len(mu)) > 0.25


def test_memory_and_time_stay_bounded_on_200k_rows() -> None:
    rng = np.random.default_rng(3)
    blocks = [rng.normal(size=(50_000, 8)).astype(np.float32) for _ in range(4)]
    tracemalloc.start()
    try:
        start_s = time.perf_counter()
        got = knn_log_density(blocks, 200_000, max_reference_rows=1024)
        elapsed_s = time.perf_counter() - start_s
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.shape == (200_000,) and np.isfinite(got).all()
    # One distance block at a time (16 MiB) and small per-row arrays; every distance at once
    # would be 200,000 x 1,024 x 8 bytes = 1.6 GB.
    assert peak_bytes < 4 * KNN_BLOCK_ENTRIES * 8
    assert elapsed_s < 60.0  # about 2 s on an idle core


def test_the_density_option_is_validated() -> None:
    assert BiasOptions().density == "knn"
    with pytest.raises(InvalidInput, match="density: expected one of knn, histogram, got 'kde'"):
        BiasOptions(density="kde").validated()


def test_two_rows_and_identical_means_give_finite_densities() -> None:
    for mu in (np.zeros((2, 3)), np.ones((50, 4)), np.array([[0.0], [1.0]])):
        got = knn_log_density([mu], len(mu))
        assert np.isfinite(got).all() and np.allclose(got, got[0])


def test_knn_weights_favour_the_rare_cluster_the_histogram_weights_miss() -> None:
    mu, is_rare = _axis_clusters()
    log_density, log_weight = resampling_log_weights(mu, mode="knn")
    np.testing.assert_allclose(
        log_density, knn_log_density([mu], len(mu), fraction=KNN_WEIGHT_FRACTION), rtol=1e-12)
    # p^(-power / Z), normalised: a row's weight over another's follows their densities.
    z = mu.shape[1]
    np.testing.assert_allclose(log_weight - log_weight[0],
                               -(KNN_WEIGHT_POWER / z) * (log_density - log_density[0]),
                               rtol=1e-9, atol=1e-9)
    assert np.isclose(np.logaddexp.reduce(log_weight), 0.0)  # the weights sum to one
    weight = np.exp(log_weight) * len(mu)  # mean 1
    assert weight[is_rare].mean() > 2.0 * weight[~is_rare].mean()
    _, max_weight = resampling_log_weights(mu, mode="max")
    assert np.exp(max_weight[is_rare]).mean() < np.exp(max_weight[~is_rare]).mean()
    # Tempered: worth a good share of the rows, not a handful (2,417 of 6,000 here).
    assert effective_sample_size(log_weight) > 0.25 * len(mu)


def test_the_report_takes_knn_weights_from_its_mode_and_ranks_by_its_density() -> None:
    mu, is_rare = _axis_clusters(3000)
    knn_weights = _report(mu, is_rare, mode="knn", density="histogram")
    default = _report(mu, is_rare)
    _, log_weight = resampling_log_weights(mu, mode="knn")
    np.testing.assert_allclose(knn_weights.weight, np.exp(log_weight) * len(mu), rtol=1e-9)
    np.testing.assert_allclose(knn_weights.log_density, resampling_log_weights(mu)[0], rtol=1e-12)
    assert knn_weights.options.mode == "knn"
    rare_weight = {name: r.weight[is_rare].mean() for name, r in
                   (("knn", knn_weights), ("max", default))}
    assert rare_weight["knn"] > 2.0 > 1.0 > rare_weight["max"]
    with pytest.raises(InvalidInput, match="mode: expected one of paper, max, knn, got 'kde'"):
        BiasOptions(mode="kde").validated()
