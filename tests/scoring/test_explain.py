"""The explanation math against independent numpy computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentwatch.errors import InvalidInput
from latentwatch.scoring.explain import (
    DEFAULT_TOP_K,
    STD_FLOOR_SHARE,
    ExplainStats,
    Explanations,
    feature_nll,
    resolve_top_k,
    statistic_for,
    top_features,
)


def test_bernoulli_nll_is_minus_the_log_of_the_pixel_likelihood() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(5, 7))
    p = rng.uniform(0.05, 0.95, size=(5, 7))
    expected = -np.log(p**x * (1.0 - p) ** (1.0 - x))
    np.testing.assert_allclose(feature_nll(x, p, "bernoulli_nll"), expected, rtol=1e-12)
    # A mean of exactly 0 or 1 stays finite: p is kept off the ends.
    assert np.isfinite(feature_nll(np.ones((1, 2)), np.zeros((1, 2)), "bernoulli_nll")).all()


def test_gaussian_nll_is_the_unit_variance_density_without_its_constant() -> None:
    rng = np.random.default_rng(1)
    x, m = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    log_density = -0.5 * np.log(2 * np.pi) - 0.5 * (x - m) ** 2
    np.testing.assert_allclose(feature_nll(x, m, "gaussian_nll"),
                               -log_density - 0.5 * np.log(2 * np.pi), rtol=1e-12)


@pytest.mark.parametrize(("decoder", "statistic"), [
    ("bernoulli", "bernoulli_nll"), ("gaussian", "gaussian_nll"),
    ("gaussian-hetero", "gaussian_nll"), (None, "gaussian_nll"),
])
def test_the_statistic_follows_the_decoder(decoder: str | None, statistic: str) -> None:
    assert statistic_for(decoder) == statistic


def test_fit_standardises_per_feature_with_a_floor() -> None:
    rng = np.random.default_rng(2)
    nll = rng.gamma(2.0, size=(300, 5)) * np.array([1.0, 2.0, 0.5, 1.0, 1.0])
    nll[:, 3] = 0.25  # a feature that never varies (a border pixel)
    stats = ExplainStats.fit(nll, "gaussian_nll")
    sd = np.array([np.sqrt(((c - c.mean()) ** 2).sum() / (len(c) - 1)) for c in nll.T])
    floor = STD_FLOOR_SHARE * sd.mean()
    np.testing.assert_allclose(stats.mean, [c.sum() / len(c) for c in nll.T], rtol=1e-12)
    np.testing.assert_allclose(stats.std, np.where(sd > floor, sd, floor), rtol=1e-12)
    assert stats.std[3] == pytest.approx(floor)
    # contributions = (nll - mean) / std for the rows' own NLLs.
    x = rng.normal(size=(3, 5))
    m = rng.normal(size=(3, 5))
    expected = (0.5 * (x - m) ** 2 - stats.mean) / stats.std
    np.testing.assert_allclose(stats.contributions(x, m), expected, rtol=1e-12)


def test_calibration_rows_centre_on_zero() -> None:
    rng = np.random.default_rng(3)
    x, m = rng.normal(size=(200, 4)), rng.normal(size=(200, 4))
    stats = ExplainStats.fit(feature_nll(x, m, "gaussian_nll"), "gaussian_nll")
    c = stats.contributions(x, m)
    np.testing.assert_allclose(c.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(c.std(axis=0, ddof=1), 1.0, rtol=1e-9)


def _top_by_sorting(values: np.ndarray, k: int) -> tuple[list[list[int]], list[list[float]]]:
    features, top = [], []
    for row in values.tolist():
        ranked = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        features.append(ranked)
        top.append([row[j] for j in ranked])
    return features, top


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_features_are_the_largest_first(k: int) -> None:
    values = np.random.default_rng(4).normal(size=(50, 10))
    explained = top_features(values, k, [f"c{j}" for j in range(10)])
    features, top = _top_by_sorting(values, k)
    assert explained.features.tolist() == features
    np.testing.assert_array_equal(explained.contributions, top)
    assert explained.names[7] == tuple(f"c{j}" for j in features[7])


def test_equal_contributions_come_in_index_order() -> None:
    values = np.array([[0.0, 2.0, 1.0, 2.0, 2.0]])
    assert top_features(values, 2).features.tolist() == [[1, 3]]
    assert top_features(values, 5).features.tolist() == [[1, 3, 4, 2, 0]]
    assert top_features(values, 2).names == (("", ""),)


def test_top_k_of_a_request() -> None:
    assert resolve_top_k(0, 64) == DEFAULT_TOP_K
    assert resolve_top_k(0, 3) == 3
    assert resolve_top_k(64, 64) == 64
    for bad in (-1, 65):
        with pytest.raises(InvalidInput, match="explain_top_k"):
            resolve_top_k(bad, 64)


def test_dense_and_concat() -> None:
    values = np.random.default_rng(5).normal(size=(4, 6))
    a, b = top_features(values[:1], 2), top_features(values[1:], 2)
    both = Explanations.concat([a, b])
    assert len(both) == 4
    np.testing.assert_array_equal(both.features, top_features(values, 2).features)
    dense = both.dense(6)
    assert (np.isfinite(dense).sum(axis=1) == 2).all()
    np.testing.assert_array_equal(np.nanmax(dense, axis=1), values.max(axis=1))


def test_saved_statistics_load_without_pickles_and_are_checked(tmp_path: Path) -> None:
    stats = ExplainStats.fit(np.random.default_rng(6).gamma(2.0, size=(20, 3)), "bernoulli_nll")
    stats.save(tmp_path / "explain.npz")
    loaded = ExplainStats.load(tmp_path / "explain.npz", 3)
    assert loaded.statistic == "bernoulli_nll"
    np.testing.assert_array_equal(loaded.std, stats.std)
    with pytest.raises(ValueError, match="3 features|model has 4"):
        ExplainStats.load(tmp_path / "explain.npz", 4)
    np.savez(tmp_path / "odd.npz", statistic=np.array("x"), mean=stats.mean, std=stats.std)
    with pytest.raises(ValueError, match="unknown explanation statistic"):
        ExplainStats.load(tmp_path / "odd.npz", 3)
    np.savez(tmp_path / "zero.npz", statistic=np.array("gaussian_nll"), mean=stats.mean,
             std=np.zeros(3))
    with pytest.raises(ValueError, match="non-positive"):
        ExplainStats.load(tmp_path / "zero.npz", 3)
    np.savez(tmp_path / "pickled.npz", statistic=np.array(["a", None], dtype=object),
             mean=stats.mean, std=stats.std)
    with pytest.raises(ValueError, match="pickle"):
        ExplainStats.load(tmp_path / "pickled.npz", 3)
