"""Conformal p-values and the decisions made from them (numpy only, no I/O).

Conformal p-value of a score s against n calibration scores: p = (1 + #{i: s_i >= s}) / (n + 1);
it is never 0 and never above 1, and p <= alpha flags at a false-alarm rate <= alpha.
Benjamini-Hochberg is here once, for the service (one request) and the client (many requests).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput
from latentwatch.scoring.results import FdrResult

# Relative slack of BH's comparison p_(k) <= level * k / m. A conformal p-value (1 + j)/(n + 1)
# that lies exactly on the bound (as rationals, with `level` read as the decimal it was written
# as) can land one or two ulps above the float bound: level is itself rounded, and so are the
# product and the division. Four ulps cover those roundings. A conformal p-value truly above the
# bound exceeds it by a relative 1 / ((n + 1) * m * d) at least, d the denominator of level's
# decimal (100 for 0.01), so the slack admits none while (n + 1) * m * d stays below 1e15.
BH_RELATIVE_SLACK = 4 * float(np.finfo(np.float64).eps)


def p_values(sorted_calibration: NDArray[np.float64], scores: NDArray) -> NDArray[np.float64]:
    """Conformal p-values of `scores` (n,) against ascending calibration scores (m,)."""
    m = sorted_calibration.shape[0]
    below = np.searchsorted(sorted_calibration, scores.astype(np.float64, copy=False), "left")
    return (1.0 + (m - below)) / (m + 1.0)  # m - below = #{s_i >= s}


def min_rows_for_alpha(alpha: float) -> int:
    """Fewest calibration rows for which p = (1 + #{s_i >= s}) / (n + 1) can reach alpha."""
    rows = 1.0 / alpha - 1.0 - 1e-9
    if math.isinf(rows):  # a subnormal alpha (below 5.6e-309): 1 / alpha overflows a float
        return math.ceil(1 / Fraction(alpha)) - 1
    return max(1, math.ceil(rows))


def _at_least(rows: int) -> str:
    """A row count for a message: exact up to 15 digits, else its leading digits (rounded down,
    so "at least" stays true) and its power of ten."""
    digits = str(rows)
    return digits if len(digits) <= 15 else f"{digits[0]}.{digits[1:3]}e+{len(digits) - 1}"


def check_alpha(alpha: float, n_calibration: int) -> float:
    """alpha in (0, 1) that a calibration set of n rows can resolve (its p-values >= 1/(n+1))."""
    if not 0.0 < alpha < 1.0:
        raise InvalidInput(f"alpha must be in (0, 1), got {alpha}")
    if alpha * (n_calibration + 1) < 1.0 - 1e-9:
        needed = min_rows_for_alpha(alpha)
        raise InvalidInput(
            f"alpha {alpha:g} is below 1/(n+1) = {1.0 / (n_calibration + 1):.4g}, the smallest "
            f"p-value of this model's {n_calibration} calibration rows; resolving alpha {alpha:g} "
            f"needs a calibration set of at least {_at_least(needed)} rows"
        )
    return float(alpha)


def check_fdr(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise InvalidInput(f"fdr must be in (0, 1), got {level}")
    return float(level)


def benjamini_hochberg(p: NDArray[np.floating], level: float) -> FdrResult:
    """The rows Benjamini-Hochberg rejects at false discovery rate `level`.

    With m p-values sorted ascending, k is the largest rank with p_(k) <= level * k / m; every
    row with p <= p_(k) is flagged, and p_(k) is the threshold (0 when nothing is flagged).
    """
    level = check_fdr(level)
    p = np.asarray(p, dtype=np.float64).reshape(-1)  # (N,)
    values, counts = np.unique(p, return_counts=True)
    threshold = bh_threshold(values, counts, level)
    if threshold is None:
        return FdrResult(level, np.zeros(p.shape[0], dtype=bool), 0, 0.0)
    is_outlier = p <= threshold
    return FdrResult(level, is_outlier, int(np.count_nonzero(is_outlier)), threshold)


def bh_threshold(
    values: NDArray[np.float64], counts: NDArray[np.int64], level: float
) -> float | None:
    """Benjamini-Hochberg's threshold from the distinct p-values (ascending) and how many rows
    have each; None when nothing is flagged.

    Among tied p-values the largest rank is the cumulative count, and it is the one that passes
    first, so testing each distinct value at its cumulative count gives p_(k) exactly. A value
    on the bound passes (see BH_RELATIVE_SLACK).
    """
    m = int(counts.sum())
    ranks = np.cumsum(counts)  # the largest rank of each distinct value
    bound = level * ranks / m
    passing = np.flatnonzero(values <= bound * (1.0 + BH_RELATIVE_SLACK))
    return None if passing.size == 0 else float(values[passing[-1]])


class PValueTally:
    """How many rows of a stream had each distinct p-value: the exact Benjamini-Hochberg
    threshold over any number of rows, in memory bounded by the distinct values. A conformal
    p-value takes at most n + 1 values for n calibration rows, so that bound is n + 1."""

    def __init__(self) -> None:
        self._counts: dict[float, int] = {}
        self.n_rows = 0

    def add(self, p: NDArray[np.floating]) -> None:
        values, counts = np.unique(np.asarray(p, dtype=np.float64), return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            self._counts[value] = self._counts.get(value, 0) + count
        self.n_rows += int(counts.sum())

    def threshold(self, level: float) -> float | None:
        """BH's threshold at `level` over every row added; None when nothing is flagged."""
        level = check_fdr(level)
        if not self._counts:
            return None
        values = np.array(sorted(self._counts), dtype=np.float64)
        counts = np.array([self._counts[v] for v in values.tolist()], dtype=np.int64)
        return bh_threshold(values, counts, level)
