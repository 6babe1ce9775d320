"""Share findings (latentwatch.bias.groups.even_split_tests): each group's rows against an even
split of its column's values. Pure functions over counts: no model is trained."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from numpy.typing import NDArray

from latentwatch.bias.groups import (
    GroupCounts,
    GroupStats,
    binomial_test,
    even_split_tests,
    group_stats,
    wilson_interval,
)
from latentwatch.data import load_source


@pytest.fixture(scope="module")
def digit_counts() -> NDArray[np.int64]:
    y = load_source("digits").y
    assert y is not None
    return np.bincount(y, minlength=10)  # 174 to 183 rows per digit


def _counts(rows: NDArray[np.int64], column: str = "label") -> list[GroupCounts]:
    # The sparse counts do not enter the share tests; a tenth of each group's rows.
    return [GroupCounts(column, str(d), int(r), int(r) // 10, float(r))
            for d, r in enumerate(rows.tolist())]


def _stats(rows: NDArray[np.int64], level: float = 0.05) -> list[GroupStats]:
    counts = _counts(rows)
    n = int(rows.sum())
    return group_stats(counts, n, sum(c.n_sparse_rows for c in counts), level)


def test_balanced_digits_have_no_share_finding(digit_counts: NDArray[np.int64]) -> None:
    assert digit_counts.min() >= 170 and digit_counts.max() <= 185
    groups = _stats(digit_counts)
    assert all(g.even_share == 0.1 for g in groups)
    assert all(0.9 < g.share_ratio < 1.1 for g in groups)
    assert not any(g.share_significant or g.share_flagged for g in groups)
    assert not any(g.fewer_rows or g.more_rows for g in groups)


@pytest.mark.parametrize("digit", range(10))
def test_a_digit_kept_at_three_percent_has_fewer_rows_than_an_even_split(
    digit_counts: NDArray[np.int64], digit: int
) -> None:
    rows = digit_counts.copy()
    others = int(rows.sum() - rows[digit])
    rows[digit] = round(0.03 / 0.97 * others)  # 3% of the rows kept: about 50
    groups = _stats(rows)
    rare = groups[digit]
    assert rare.share == pytest.approx(0.03, abs=0.001)
    assert rare.share_ratio == pytest.approx(0.3, abs=0.01)
    assert rare.share_ratio_high < 0.5 and rare.share_p_value < 1e-20
    assert rare.share_flagged and rare.fewer_rows and not rare.more_rows
    # The other digits each hold about 10.8%: within the band, so none is flagged.
    assert [g.value for g in groups if g.share_flagged] == [str(digit)]


def test_share_figures_are_the_binomial_test_and_wilson_interval_against_one_over_g() -> None:
    rows = np.array([30, 70, 100, 200])
    n = int(rows.sum())
    tests = even_split_tests(_counts(rows), n, 0.05)
    p_values = []
    for r, t in zip(rows.tolist(), tests, strict=True):
        assert t.even_share == 0.25
        assert t.share_ratio == pytest.approx(r / n / 0.25)
        low, high = wilson_interval(r, n, 0.95)
        assert (t.share_ratio_low, t.share_ratio_high) == pytest.approx((4 * low, 4 * high))
        assert t.share_p_value == pytest.approx(binomial_test(r, n, 0.25))
        p_values.append(t.share_p_value)
    # Exact two-sided test at n = 400 against brute force for the smallest group.
    pmf = [math.comb(n, j) * Fraction(1, 4) ** j * Fraction(3, 4) ** (n - j) for j in range(n + 1)]
    brute = float(sum(q for q in pmf if q <= pmf[30] * Fraction(1 + 10**-7)))
    assert tests[0].share_p_value == pytest.approx(brute, rel=1e-9)
    assert [t.share_flagged for t in tests] == [True, True, False, True]
    assert tests[3].share_ratio == 2.0 and tests[3].share_significant


def test_each_column_has_its_own_even_split_and_bh_runs_over_every_share_test() -> None:
    # Column "a": two values, 55/45 of 1,000 rows; column "b": four values, even.
    counts = [GroupCounts("a", "x", 550, 55, 550.0), GroupCounts("a", "y", 450, 45, 450.0)]
    counts += [GroupCounts("b", str(v), 250, 25, 250.0) for v in range(4)]
    tests = even_split_tests(counts, 1000, 0.05)
    assert [t.even_share for t in tests] == [0.5, 0.5, 0.25, 0.25, 0.25, 0.25]
    assert [t.share_ratio for t in tests] == pytest.approx([1.1, 0.9, 1, 1, 1, 1])
    # p = 0.0016 for 550 of 1,000 at 1/2: rejected by BH over the six tests at 0.05, not at 0.001.
    assert tests[0].share_significant and not tests[0].share_flagged  # inside [0.8, 1.25]
    strict = even_split_tests(counts, 1000, 0.001)
    assert not any(t.share_significant for t in strict)
