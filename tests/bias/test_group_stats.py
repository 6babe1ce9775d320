"""Group statistics of a bias report (latentwatch.bias.groups): the exact binomial test and the
Wilson interval against direct computation, BH across groups, and what gets flagged."""

from __future__ import annotations

import math
from fractions import Fraction
from statistics import NormalDist

import numpy as np
import pytest

from latentwatch.bias.accumulator import BiasAccumulator
from latentwatch.bias.groups import (
    GroupCounts,
    LogFactorials,
    binomial_test,
    group_stats,
    wilson_interval,
)
from latentwatch.bias.options import BiasOptions
from latentwatch.errors import InvalidInput
from latentwatch.scoring.conformal import benjamini_hochberg


def _brute_force_p(k: int, n: int, p: Fraction) -> float:
    """Sum of the exact pmf over the outcomes no more likely than k (exact rationals)."""
    pmf = [math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(n + 1)]
    return float(sum(q for q in pmf if q <= pmf[k] * Fraction(1 + 10**-7)))


@pytest.mark.parametrize("n", [1, 2, 7, 20, 41])
@pytest.mark.parametrize("p", [Fraction(1, 100), Fraction(1, 10), Fraction(1, 3), Fraction(1, 2),
                               Fraction(9, 10)])
def test_binomial_test_equals_the_brute_force_tail_for_every_outcome(n: int, p: Fraction) -> None:
    table = LogFactorials(n)
    for k in range(n + 1):
        expected = _brute_force_p(k, n, p)
        assert binomial_test(k, n, float(p), table) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_binomial_test_on_large_n_matches_a_direct_pmf_sum() -> None:
    n, p = 20_000, 0.03
    j = np.arange(n + 1)
    log_pmf = np.array([math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1)
                        for x in range(n + 1)]) + j * math.log(p) + (n - j) * math.log1p(-p)
    table = LogFactorials(n)
    for k in (0, 450, 560, 600, 640, 700, 900, 5000):
        direct = float(np.exp(log_pmf[log_pmf <= log_pmf[k] + math.log(1 + 1e-7)]).sum())
        assert binomial_test(k, n, p, table) == pytest.approx(min(direct, 1.0), rel=1e-8,
                                                              abs=1e-300)


def test_binomial_test_agrees_with_scipy_where_it_is_installed() -> None:
    stats = pytest.importorskip("scipy.stats")
    for k, n, p in ((3, 180, 0.1), (62, 180, 0.1), (15, 167, 0.03), (1, 5000, 0.5),
                    (1000, 100_000, 0.0101)):
        assert binomial_test(k, n, p) == pytest.approx(stats.binomtest(k, n, p).pvalue,
                                                       rel=1e-6, abs=1e-300)


def test_binomial_test_edges() -> None:
    assert binomial_test(5, 5, 1.0) == 1.0 and binomial_test(4, 5, 1.0) == 0.0
    assert binomial_test(0, 10, 0.0) == 1.0
    with pytest.raises(ValueError):
        binomial_test(6, 5, 0.5)


@pytest.mark.parametrize("k, n", [(0, 10), (1, 10), (18, 180), (62, 180), (180, 180)])
def test_wilson_bounds_solve_the_score_equation(k: int, n: int) -> None:
    z = NormalDist().inv_cdf(0.975)
    low, high = wilson_interval(k, n, 0.95)
    phat = k / n
    assert low <= phat <= high
    for bound in (low, high):  # (phat - p)^2 = z^2 p (1 - p) / n at both ends
        assert (phat - bound) ** 2 == pytest.approx(z * z * bound * (1 - bound) / n, abs=1e-12)
    assert wilson_interval(k, n, 0.99)[0] <= low  # wider at higher confidence


def test_group_stats_use_one_benjamini_hochberg_over_all_groups_and_flag_only_significant(
) -> None:
    # 10,000 rows, 1,000 sparse: a group far out, one outside the band by chance (13 sparse rows
    # where 10 are expected), a big one significant but inside the band, and the rest.
    counts = [
        GroupCounts("c", "far", 500, 200, 900.0),
        GroupCounts("c", "chance", 100, 13, 100.0),
        GroupCounts("c", "big", 5000, 580, 5000.0),
        GroupCounts("c", "rest", 4400, 207, 4000.0),
        GroupCounts("d", "x", 5000, 500, 5000.0),
        GroupCounts("d", "y", 5000, 500, 5000.0),
    ]
    stats = group_stats(counts, n_rows=10_000, n_sparse=1000, significance_level=0.05)
    p = np.array([binomial_test(c.n_sparse_rows, 1000, c.n_rows / 10_000) for c in counts])
    np.testing.assert_allclose([g.p_value for g in stats], p)
    assert [g.significant for g in stats] == benjamini_hochberg(p, 0.05).is_outlier.tolist()
    by_value = {g.value: g for g in stats}
    assert by_value["far"].flagged and by_value["far"].representation_ratio == pytest.approx(4.0)
    assert by_value["rest"].flagged and by_value["rest"].representation_ratio < 0.8
    assert by_value["chance"].representation_ratio == pytest.approx(1.3)
    assert not by_value["chance"].significant and not by_value["chance"].flagged
    assert by_value["big"].representation_ratio == pytest.approx(1.16)
    assert by_value["big"].significant and not by_value["big"].flagged  # inside the band
    assert not by_value["x"].significant and not by_value["y"].flagged
    for g in stats:
        low, high = wilson_interval(g.n_sparse_rows, 1000, 0.95)
        assert (g.ratio_low, g.ratio_high) == pytest.approx((low / g.share, high / g.share))
        assert g.ratio_low <= g.representation_ratio <= g.ratio_high
        assert g.mean_weight == pytest.approx(counts[stats.index(g)].weight_sum / g.n_rows)


def test_labels_unrelated_to_the_latents_are_not_flagged_by_chance_share() -> None:
    # Ten equal groups drawn at random: each holds about 10% of the sparse rows, give or take
    # chance. Before the test, every group whose count strayed outside [0.8, 1.25] was flagged.
    rng = np.random.default_rng(4)
    mu = rng.normal(size=(2000, 4))
    labels = [f"b{v}" for v in rng.permutation(np.repeat(np.arange(10), 200))]
    accumulator = BiasAccumulator(4, max_rows=10_000)
    accumulator.add(mu, groups={"batch": labels})
    report = accumulator.finish(BiasOptions(), None)
    assert sum(g.outside_band for g in report.groups) >= 2  # chance alone leaves the band
    assert not any(g.flagged for g in report.groups)
    assert all(0 < g.p_value <= 1 and g.ratio_low < 1 < g.ratio_high for g in report.groups)


def test_a_rare_group_in_the_tails_is_flagged_and_the_level_is_an_option() -> None:
    rng = np.random.default_rng(5)
    mu = rng.normal(size=(3000, 4))
    rare = np.zeros(3000, dtype=bool)
    rare[:90] = True  # 3% of the rows, all in the tails
    mu[rare] *= 4.0
    accumulator = BiasAccumulator(4, max_rows=10_000)
    accumulator.add(mu, groups={"g": ["rare" if r else "common" for r in rare]})
    report = accumulator.finish(BiasOptions(significance_level=0.01), None)
    found = next(g for g in report.groups if g.value == "rare")
    assert found.flagged and found.significant and found.p_value < 1e-10
    assert found.ratio_low > 1.25 and report.options.significance_level == 0.01
    with pytest.raises(InvalidInput, match="significance_level"):
        BiasOptions(significance_level=1.0).validated()


def test_under_random_labels_a_report_flags_anything_at_most_at_the_level() -> None:
    # 400 random labelings into ten equal groups of 1,800 rows (180 sparse): BH over all-null
    # groups rejects anything in at most 5% of the reports. The old rule, a ratio outside
    # [0.8, 1.25], "found" something in nearly every one.
    rng = np.random.default_rng(6)
    n_rows, n_sparse = 1800, 180
    sparse = np.zeros(n_rows, dtype=bool)
    sparse[:n_sparse] = True
    any_flag = any_outside = 0
    for _ in range(400):
        labels = rng.permutation(np.arange(n_rows) % 10)
        counts = [GroupCounts("batch", str(v), 180, int(np.sum(sparse[labels == v])), 180.0)
                  for v in range(10)]
        stats = group_stats(counts, n_rows, n_sparse, 0.05)
        any_flag += any(g.flagged for g in stats)
        any_outside += any(g.outside_band for g in stats)
    assert any_outside / 400 > 0.9
    assert any_flag / 400 <= 0.08  # 0.05 plus 2.7 standard errors
