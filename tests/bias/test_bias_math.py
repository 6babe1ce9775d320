"""The bias-report math (latentwatch/bias/) against direct computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentwatch.bias.accumulator import BiasAccumulator
from latentwatch.bias.density import effective_sample_size, resampling_log_weights
from latentwatch.bias.drift import LatentReference
from latentwatch.bias.options import MODES, BiasOptions
from latentwatch.errors import InvalidInput


def _literal(mu: np.ndarray, bins: int, alpha: float) -> tuple[np.ndarray, ...]:
    """The formulas written out with np.histogram and plain products (fine for few dims)."""
    n, z = mu.shape
    log_density, paper, lab = np.zeros(n), np.ones(n), np.zeros(n)
    for j in range(z):
        density, edges = np.histogram(mu[:, j], bins=bins, density=True)
        q = density[np.clip(np.searchsorted(edges, mu[:, j], "right") - 1, 0, bins - 1)]
        log_density += np.log(q)
        paper *= 1.0 / (q + alpha)
        p = 1.0 / (q + alpha)
        lab = np.maximum(lab, p / p.sum())
    return log_density, paper / paper.sum(), lab / lab.sum()


@pytest.mark.parametrize("bins,alpha", [(10, 1e-3), (5, 0.1), (30, 0.0)])
def test_weights_match_the_written_out_formulas(bins: int, alpha: float) -> None:
    mu = np.random.default_rng(0).normal(size=(3000, 4)) * [1.0, 0.5, 2.0, 0.1]
    log_density, paper, lab = _literal(mu, bins, alpha)
    ld, lw = resampling_log_weights(mu, bins, alpha, "paper")
    np.testing.assert_allclose(ld, log_density, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.exp(lw), paper, rtol=1e-9)
    _, lw_max = resampling_log_weights(mu, bins, alpha, "max")
    np.testing.assert_allclose(np.exp(lw_max), lab, rtol=1e-9)


def test_many_latent_dimensions_neither_underflow_nor_overflow() -> None:
    mu = np.random.default_rng(1).standard_t(3, size=(4000, 200)) * 10.0
    with np.errstate(all="ignore"):
        _, paper, _ = _literal(mu, 10, 1e-3)
    assert not np.isfinite(paper).all()  # the literal product overflows
    for mode in MODES:
        ld, lw = resampling_log_weights(mu, 10, 1e-3, mode)
        assert np.isfinite(ld).all() and np.isfinite(lw).all()
        assert np.isclose(np.logaddexp.reduce(lw), 0.0)
        assert 1.0 <= effective_sample_size(lw) <= len(mu)


def test_effective_sample_size_from_log_weights() -> None:
    w = np.array([1.0, 1.0, 2.0, 4.0])
    assert np.isclose(effective_sample_size(np.log(w)), w.sum() ** 2 / (w**2).sum())
    assert np.isclose(effective_sample_size(np.log(w) - 800.0), w.sum() ** 2 / (w**2).sum())
    assert np.isclose(effective_sample_size(np.zeros(50)), 50.0)


def _planted(n: int = 6000, rare: float = 0.03, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 6-dim latent cloud with a small far-away cluster: the rare group."""
    rng = np.random.default_rng(seed)
    is_rare = rng.random(n) < rare
    mu = rng.normal(size=(n, 6))
    mu[is_rare] += 4.0
    return mu, is_rare


def test_report_finds_a_planted_rare_group() -> None:
    mu, is_rare = _planted()
    acc = BiasAccumulator(6, max_rows=10**6)
    acc.add(mu, None, groups={"cluster": np.where(is_rare, "rare", "common").tolist()})
    report = acc.finish(BiasOptions(top_k=50), None)
    by_value = {g.value: g for g in report.groups}
    assert by_value["rare"].representation_ratio > 5 and by_value["rare"].flagged
    assert by_value["common"].representation_ratio < 1
    assert by_value["rare"].mean_weight > 10 * by_value["common"].mean_weight
    assert report.worst_group_ratio == by_value["rare"].representation_ratio
    # 3% of the rows, yet most of the 50 sparsest: the rest are the common cloud's far tails.
    assert is_rare[report.sparsest].mean() > 0.6 and not is_rare[report.densest].any()
    assert np.isclose(report.weight.mean(), 1.0)
    assert np.isclose(sum(g.sparse_share for g in report.groups), 1.0)


def test_chunking_does_not_change_the_report() -> None:
    mu, is_rare = _planted(2500)
    logvar = np.full_like(mu, -1.0)
    labels = np.where(is_rare, "rare", "common")
    ids = [f"row-{i}" for i in range(len(mu))]
    reports = []
    for chunk in (2500, 333, 1):
        acc = BiasAccumulator(6, max_rows=10**6)
        for s in range(0, len(mu), chunk):
            acc.add(mu[s : s + chunk], logvar[s : s + chunk], ids[s : s + chunk],
                    {"g": labels[s : s + chunk].tolist()})
        reports.append(acc.finish(BiasOptions(mode="max"), None))
    first = reports[0]
    for other in reports[1:]:
        np.testing.assert_allclose(other.log_density, first.log_density, rtol=1e-6)
        np.testing.assert_allclose(other.weight, first.weight, rtol=1e-5)
        np.testing.assert_allclose(other.kl_to_prior, first.kl_to_prior, rtol=1e-6)
        assert other.groups == first.groups and other.ids == ids
    assert first.id_of(int(first.sparsest[0])) == ids[int(first.sparsest[0])]


def test_kl_to_prior_of_the_aggregate_posterior() -> None:
    rng = np.random.default_rng(2)
    mu = rng.normal(0.5, 0.6, size=(20000, 3))
    logvar = np.full_like(mu, np.log(0.64))  # aggregate variance 0.36 + 0.64 = 1, mean 0.5
    acc = BiasAccumulator(3, max_rows=10**6)
    acc.add(mu, logvar)
    report = acc.finish(BiasOptions(), None)
    np.testing.assert_allclose(report.kl_to_prior, 0.5 * 0.25, atol=0.01)
    reference = LatentReference.from_latents(mu, logvar)
    np.testing.assert_allclose(reference.kl_to_prior, 0.125, atol=0.01)


def test_drift_is_small_for_the_same_distribution_and_large_for_a_shift(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    train = rng.normal(size=(8000, 5))
    train[:, 4] *= 0.01  # an inactive unit: its PSI must not count
    reference = LatentReference.from_latents(train)
    reference.save(tmp_path / "reference.npz")
    reference = LatentReference.load(tmp_path / "reference.npz")
    assert reference.active.tolist() == [True] * 4 + [False]

    def drift_of(mu: np.ndarray):  # type: ignore[no-untyped-def]
        acc = BiasAccumulator(5, max_rows=10**6)
        acc.add(mu, None)
        return acc.finish(BiasOptions(), reference)

    same = rng.normal(size=(5000, 5))
    same[:, 4] *= 0.01
    shifted = same.copy()
    shifted[:, 1] += 1.5
    shifted[:, 4] += 1.0  # inactive: ignored by the overall figure
    d_same, d_shift = drift_of(same), drift_of(shifted)
    assert d_same.drift is not None and d_shift.drift is not None
    assert d_same.drift.overall < 0.02 and d_same.drift.level == "none"
    assert d_shift.drift.max_psi_dimension == 1 and d_shift.drift.level == "significant"
    assert d_shift.drift.overall > 20 * d_same.drift.overall
    assert abs(d_shift.drift.mean_shift[1] - 1.5) < 0.1
    assert d_shift.drift.gaussian_kl > 10 * max(d_same.drift.gaussian_kl, 0.01)
    comparison = d_shift.reference
    assert comparison is not None
    total = comparison.share.sum(axis=1) + comparison.below + comparison.above
    np.testing.assert_allclose(total, 1.0)
    assert comparison.above[4] > 0.9  # the shifted inactive unit left the reference's range


def test_malformed_reference_is_refused(tmp_path: Path) -> None:
    reference = LatentReference.from_latents(np.random.default_rng(4).normal(size=(100, 3)))
    arrays = {name: getattr(reference, name) for name in LatentReference._ARRAYS}
    arrays["cov"] = np.eye(2)
    np.savez(tmp_path / "bad.npz", n_rows=np.int64(100), **arrays)
    with pytest.raises(ValueError, match="cov"):
        LatentReference.load(tmp_path / "bad.npz")
    arrays["cov"] = reference.cov
    arrays["mean"] = np.array([0.0, np.nan, 0.0])
    np.savez(tmp_path / "nan.npz", n_rows=np.int64(100), **arrays)
    with pytest.raises(ValueError, match="NaN"):
        LatentReference.load(tmp_path / "nan.npz")


def test_bad_chunks_and_options_say_what_is_wrong() -> None:
    acc = BiasAccumulator(2, max_rows=5)
    acc.add(np.zeros((2, 2)), None, ids=["a", "b"], groups={"g": ["x", "y"]})
    with pytest.raises(InvalidInput, match="every chunk or with none"):
        acc.add(np.zeros((1, 2)), None, groups={"g": ["x"]})
    with pytest.raises(InvalidInput, match="same in every chunk"):
        acc.add(np.zeros((1, 2)), None, ids=["c"], groups={"h": ["x"]})
    with pytest.raises(InvalidInput, match="2 labels for 1 rows"):
        acc.add(np.zeros((1, 2)), None, ids=["c"], groups={"g": ["x", "y"]})
    with pytest.raises(InvalidInput, match="LATENTWATCH_BIAS_MAX_ROWS"):
        acc.add(np.zeros((4, 2)), None, ids=list("cdef"), groups={"g": list("xxxx")})
    assert acc.n_rows == 2  # refused chunks leave nothing behind
    with pytest.raises(InvalidInput, match="non-finite"):
        acc.add(np.array([[np.inf, 0.0]]), None, ids=["c"], groups={"g": ["x"]})
    with pytest.raises(InvalidInput, match="distinct values"):
        BiasAccumulator(1, max_rows=100, max_group_values=3).add(
            np.zeros((5, 1)), None, groups={"g": list("abcde")}
        )
    with pytest.raises(InvalidInput, match="at least 2 rows"):
        BiasAccumulator(2, max_rows=5).finish(BiasOptions(), None)
    for bad in (BiasOptions(bins=1), BiasOptions(alpha=-1.0), BiasOptions(mode="median"),
                BiasOptions(sparse_fraction=0.0), BiasOptions(top_k=-1)):
        with pytest.raises(InvalidInput):
            bad.validated()
