"""Conformal p-values, Benjamini-Hochberg and alpha/fdr checks against brute force."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from latentwatch.errors import InvalidInput
from latentwatch.scoring.conformal import (
    PValueTally,
    benjamini_hochberg,
    check_alpha,
    check_fdr,
    min_rows_for_alpha,
    p_values,
)


def brute_force_p(calibration: np.ndarray, s: float) -> float:
    return (1 + sum(1 for c in calibration if c >= s)) / (len(calibration) + 1)


def brute_force_bh(p: np.ndarray, level: float) -> np.ndarray:
    m = len(p)
    ranked = sorted(p)
    k = max((i for i in range(1, m + 1) if ranked[i - 1] <= level * i / m), default=0)
    return np.array([k > 0 and x <= ranked[k - 1] for x in p])


@pytest.mark.parametrize("seed", range(5))
def test_p_values_equal_a_brute_force_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Integer-valued scores make ties with the calibration set common.
    calibration = rng.integers(0, 20, size=rng.integers(1, 60)).astype(np.float64)
    scores = np.concatenate([rng.integers(-2, 23, size=40), calibration[:5]]).astype(np.float32)
    p = p_values(np.sort(calibration), scores)
    expected = [brute_force_p(calibration, float(s)) for s in scores]
    np.testing.assert_allclose(p, expected, rtol=0, atol=1e-15)
    n = len(calibration)
    assert p.min() >= 1 / (n + 1) and p.max() <= 1.0


def test_p_value_extremes() -> None:
    calibration = np.array([1.0, 2.0, 3.0])
    p = p_values(calibration, np.array([-1e30, 2.0, 1e30]))
    np.testing.assert_array_equal(p, [1.0, 0.75, 0.25])  # never 0, never above 1


@pytest.mark.parametrize("level", [0.01, 0.05, 0.1, 0.3])
@pytest.mark.parametrize("seed", range(4))
def test_benjamini_hochberg_equals_brute_force(level: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Discrete conformal-like p-values (ties) mixed with small ones (discoveries).
    p = np.concatenate([(1 + rng.integers(0, 99, 30)) / 100, rng.uniform(0, 0.01, 10)])
    rng.shuffle(p)
    decision = benjamini_hochberg(p, level)
    expected = brute_force_bh(p, level)
    np.testing.assert_array_equal(decision.is_outlier, expected)
    assert decision.n_flagged == expected.sum() and decision.level == level
    assert decision.p_value_threshold == (p[expected].max() if expected.any() else 0.0)


def test_benjamini_hochberg_rejects_nothing_when_nothing_is_small() -> None:
    decision = benjamini_hochberg(np.array([0.5, 0.9, 0.7]), 0.05)
    assert not decision.is_outlier.any() and decision.p_value_threshold == 0.0


def test_alpha_must_be_resolvable_by_the_calibration_set() -> None:
    assert check_alpha(0.01, 99) == 0.01  # 1 / (99 + 1) is just enough
    with pytest.raises(InvalidInput, match="at least 999 rows"):
        check_alpha(0.001, 99)
    with pytest.raises(InvalidInput, match="at least 101 rows"):
        check_alpha(0.0099, 99)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_alpha_outside_the_unit_interval_is_refused(alpha: float) -> None:
    with pytest.raises(InvalidInput, match=r"alpha must be in \(0, 1\)"):
        check_alpha(alpha, 1000)


@pytest.mark.parametrize("level", [0.0, 1.0, -1.0, math.nan])
def test_fdr_outside_the_unit_interval_is_refused(level: float) -> None:
    with pytest.raises(InvalidInput, match=r"fdr must be in \(0, 1\)"):
        check_fdr(level)
    with pytest.raises(InvalidInput, match=r"fdr must be in \(0, 1\)"):
        benjamini_hochberg(np.array([0.01]), level)


def test_min_rows_for_alpha_is_what_check_alpha_asks_for() -> None:
    assert min_rows_for_alpha(0.01) == 99
    assert min_rows_for_alpha(0.5) == 1
    check_alpha(0.001, min_rows_for_alpha(0.001))
    with pytest.raises(InvalidInput, match=f"at least {min_rows_for_alpha(0.001)} rows"):
        check_alpha(0.001, min_rows_for_alpha(0.001) - 1)


def exact_bh_count(p: list[Fraction], level: Fraction) -> int:
    """How many rows BH flags, in exact rational arithmetic (the oracle)."""
    ranked = sorted(p)
    m = len(p)
    return max((k for k in range(1, m + 1) if ranked[k - 1] <= level * k / m), default=0)


def boundary_cases(
    levels: list[float], max_n: int, max_m: int
) -> list[tuple[float, int, int, int]]:
    """(level, n, m, k) where the conformal p-value (1 + j)/(n + 1) equals level * k / m exactly."""
    cases = []
    for level in levels:
        exact = Fraction(repr(level))
        for n in range(1, max_n):
            for m in range(1, max_m):
                for k in range(1, m + 1):
                    times = exact * k / m * (n + 1)
                    if times.denominator == 1 and 1 <= times <= n + 1:
                        cases.append((level, n, m, k))
    return cases


def test_a_conformal_p_value_exactly_on_the_bh_bound_is_flagged() -> None:
    # A rational on the bound that float rounding puts an ulp above it (0.01 * 29 / 29 < 0.01).
    assert 0.01 * 29 / 29 < 0.01
    cases = boundary_cases([0.01, 0.05, 0.1, 0.15, 0.2, 0.3], max_n=160, max_m=40)
    assert len(cases) > 1000
    missed_by_naive = 0
    for level, n, m, k in cases:
        j = int(Fraction(repr(level)) * k / m * (n + 1)) - 1
        calibration = np.arange(n, dtype=np.float64)  # scores 0..n-1, ascending
        # k rows with j calibration scores at or above theirs: p = (1 + j)/(n + 1); the other
        # m - k rows score below every calibration score: p = 1.
        scores = np.concatenate([np.full(k, float(n - j)), np.full(m - k, -1.0)])
        p = p_values(calibration, scores)
        exact = [Fraction(1 + j, n + 1)] * k + [Fraction(1)] * (m - k)
        assert [Fraction(x).limit_denominator(n + 1) for x in p] == exact
        expected = exact_bh_count(exact, Fraction(repr(level)))
        decision = benjamini_hochberg(p, level)
        assert decision.n_flagged == expected >= k, (level, n, m, k)
        naive = sorted(p)[k - 1] <= level * k / m
        missed_by_naive += not naive
    assert missed_by_naive > 0  # the cases include ones the plain float comparison misses


@pytest.mark.parametrize("level", [0.01, 0.05, 0.1, 0.3])
@pytest.mark.parametrize("seed", range(4))
def test_bh_on_conformal_fractions_equals_exact_arithmetic(level: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    calibration = np.arange(n, dtype=np.float64)
    # Scores on the calibration grid: p-values are exact fractions (1 + j)/(n + 1), many tied.
    scores = rng.integers(-1, n + 1, size=int(rng.integers(5, 200))).astype(np.float64)
    scores[: len(scores) // 3] = n - rng.integers(0, 4, size=len(scores) // 3)  # small p
    p = p_values(calibration, scores)
    exact = [Fraction(1 + int((calibration >= s).sum()), n + 1) for s in scores]
    expected = exact_bh_count(exact, Fraction(repr(level)))
    decision = benjamini_hochberg(p, level)
    assert decision.n_flagged == expected
    ranked = sorted(exact)
    np.testing.assert_array_equal(
        decision.is_outlier, [expected > 0 and e <= ranked[expected - 1] for e in exact]
    )
    tally = PValueTally()
    tally.add(p)
    threshold = tally.threshold(level)
    assert (threshold is None) == (expected == 0)
    if threshold is not None:
        assert Fraction(threshold).limit_denominator(n + 1) == ranked[expected - 1]


def test_a_p_value_one_conformal_step_above_the_bound_is_not_flagged() -> None:
    # n = 99: p = 6/100 is one step above the bound 0.05 * 1 / 1 with one row.
    p = p_values(np.arange(99, dtype=np.float64), np.array([93.0]))
    assert Fraction(float(p[0])).limit_denominator(100) == Fraction(7, 100)
    assert benjamini_hochberg(p, 0.06).n_flagged == 0
    assert benjamini_hochberg(p, 0.07).n_flagged == 1
