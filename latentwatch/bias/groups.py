"""Per-group statistics of a bias report: the representation ratio, its interval and its test.

The sparse set is the `sparse_fraction` of rows with the lowest latent density. For a group with
a share `share` of all rows and `k` of the `n` sparse rows:

- representation ratio = (k / n) / share: above 1, a larger share of the group lies in the sparse
  latent regions than of the data overall; below 1, a smaller one.
- interval: the Wilson score interval of k / n at confidence 1 - significance_level, divided by
  share (the share comes from all rows, so it is taken as known).
- p-value: the exact two-sided binomial test of k against Binomial(n, share), "minlike" as in
  scipy.stats.binomtest (the outcomes no more likely than k). Drawing the sparse set without
  replacement would be hypergeometric, whose variance is smaller, so the binomial is a little
  conservative.
- significant: rejected by Benjamini-Hochberg (latentwatch.scoring.conformal) at
  significance_level over every group of the report, all columns together.
- flagged: significant and the ratio outside DISPARITY_BAND.

Beside where a group sits in latent space, how many rows it has: for a column of G values, the
group's n_rows against an even split of the n rows (the same binomial test with p0 = 1 / G and
the same Wilson interval, over all rows), share ratio = share / (1 / G), Benjamini-Hochberg over
every share test of the report, and `share_flagged` when significant with the share ratio outside
DISPARITY_BAND. The baseline is an even split of the column's values, not the population's shares:
a class that is rare in the world is flagged here too.

Group labels become int32 codes as they arrive (GroupCodes), within LabelLimits: what a caller
sends is checked label by label, so a report holds 4 bytes a row per column plus the distinct
labels, however long the longest one is.

Pure numpy and math (no scipy: this runs in the service, whose install has none).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput, quote
from latentwatch.scoring.conformal import benjamini_hochberg

DISPARITY_BAND = (0.8, 1.25)
# Outcomes this much less likely than the mode give a probability below the smallest float64, so
# the binomial pmf is summed over a window of the mode: `_WINDOW_SD` sd plus `_WINDOW_ROWS` rows
# either side (the extra rows cover the long right tail of a rare group's skewed distribution).
_WINDOW_SD, _WINDOW_ROWS = 40.0, 800
_RELATIVE_TIE = 1.0 + 1e-7  # scipy's tolerance for outcomes as likely as the observed one


@dataclass(frozen=True)
class GroupStats:
    column: str
    value: str
    n_rows: int
    share: float  # of all rows
    sparse_share: float  # of the sparsest rows
    representation_ratio: float  # sparse_share / share; > 1: more of it in sparse regions
    mean_weight: float  # weights have mean 1 over all rows
    flagged: bool  # significant and the ratio outside DISPARITY_BAND
    n_sparse_rows: int = 0  # the group's rows among the sparsest
    ratio_low: float = math.nan  # the ratio's interval at confidence 1 - significance_level
    ratio_high: float = math.nan
    p_value: float = math.nan  # two-sided exact binomial test of n_sparse_rows against share
    significant: bool = False  # rejected by Benjamini-Hochberg across the report's groups
    # Rows against an even split of the column's G values (not the population's shares).
    even_share: float = math.nan  # 1 / G
    share_ratio: float = math.nan  # share / even_share; < 1: fewer rows than an even split
    share_ratio_low: float = math.nan  # its interval at confidence 1 - significance_level
    share_ratio_high: float = math.nan
    share_p_value: float = math.nan  # two-sided exact binomial test of n_rows against even_share
    share_significant: bool = False  # rejected by Benjamini-Hochberg across the share tests
    share_flagged: bool = False  # share_significant and share_ratio outside DISPARITY_BAND

    @property
    def outside_band(self) -> bool:
        return not DISPARITY_BAND[0] <= self.representation_ratio <= DISPARITY_BAND[1]

    @property
    def fewer_rows(self) -> bool:
        """Flagged for significantly fewer rows than an even split of its column."""
        return self.share_flagged and self.share_ratio < DISPARITY_BAND[0]

    @property
    def more_rows(self) -> bool:
        """Flagged for significantly more rows than an even split of its column."""
        return self.share_flagged and self.share_ratio > DISPARITY_BAND[1]


class LogFactorials:
    """log(j!) for j = 0..n, one table per report (math.lgamma, exact to rounding)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.table = np.fromiter((math.lgamma(j + 1.0) for j in range(n + 1)), np.float64, n + 1)

    def log_pmf(self, j: NDArray[np.int64], p: float) -> NDArray[np.float64]:
        """log P(X = j) for X ~ Binomial(n, p), 0 < p < 1."""
        n = self.n
        return (self.table[n] - self.table[j] - self.table[n - j]
                + j * math.log(p) + (n - j) * math.log1p(-p))


def binomial_test(k: int, n: int, p: float, log_factorials: LogFactorials | None = None) -> float:
    """Exact two-sided p-value of k successes in n trials against success probability p."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if p <= 0.0:
        return 1.0 if k == 0 else 0.0
    if p >= 1.0:
        return 1.0 if k == n else 0.0
    table = log_factorials if log_factorials is not None else LogFactorials(n)
    if table.n != n:
        raise ValueError(f"the log-factorial table is for n={table.n}, not {n}")
    mode = int(math.floor((n + 1) * p))
    reach = int(math.ceil(_WINDOW_SD * math.sqrt(n * p * (1 - p)))) + _WINDOW_ROWS
    lo, hi = max(0, mode - reach), min(n, mode + reach)
    if not lo <= k <= hi:
        return 0.0  # P(X = k) underflows, and so does every outcome as unlikely
    j = np.arange(lo, hi + 1, dtype=np.int64)
    log_pmf = table.log_pmf(j, p)
    threshold = log_pmf[k - lo] + math.log(_RELATIVE_TIE)
    as_unlikely = log_pmf[log_pmf <= threshold]
    top = float(as_unlikely.max())
    return min(1.0, math.exp(top) * float(np.exp(as_unlikely - top).sum()))


def wilson_interval(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of the proportion k / n."""
    return _wilson(k, n, _two_sided_z(1.0 - confidence))


def _two_sided_z(level: float) -> float:
    """z with P(|Z| > z) = level, from the lower tail: 1 - level / 2 rounds to 1 for levels
    below about 1e-16, where the quantile is infinite."""
    return -NormalDist().inv_cdf(level / 2)


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    phat = k / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    # At k = 0 (k = n) the exact bound is 0 (1); rounding can leave a hair either side.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class LabelLimits:
    """What the labels of one report may hold; the service passes its settings' values."""

    max_chars: int = 256  # longest group label, column name or row id
    max_values: int = 1000  # distinct labels of one column
    max_columns: int = 16  # group columns of one report


def check_label_chars(labels: Sequence[str], what: str, first_row: int, max_chars: int) -> None:
    """Refuses the first label longer than `max_chars` (a C-speed pass when none is)."""
    if max(map(len, labels), default=0) <= max_chars:
        return
    row, label = next((i, s) for i, s in enumerate(labels, first_row) if len(s) > max_chars)
    raise InvalidInput(
        f"{what}: row {row:,} holds {len(label):,} characters, {quote(label)}; group labels "
        f"and row ids may have at most {max_chars:,} (LATENTWATCH_BIAS_MAX_LABEL_CHARS)"
    )


class GroupCodes:
    """One group column: an int32 code per row, in chunks, and the dict from label to code.

    The dict grows by the labels first seen, each checked once, so a chunk costs one look-up a
    row whatever the labels' length; a fixed-width array of the labels would take rows x longest
    label x 4 bytes (1 GiB for one 4,096-character label among 65,536 rows).
    """

    def __init__(self, name: str, limits: LabelLimits) -> None:
        self.name = name
        self.codes: dict[str, int] = {}  # label -> code, in order of first appearance
        self.blocks: list[NDArray[np.int32]] = []  # (n,) codes of each chunk taken
        self._limits = limits

    def encode(
        self, labels: Sequence[object], first_row: int
    ) -> tuple[NDArray[np.int32], list[str]]:
        """The codes of one chunk's labels and the labels new to the column, in code order; the
        column is unchanged until `take`, so a chunk refused in another column leaves none."""
        codes = self.codes
        new: dict[str, int] = {}
        out = []
        for row, label in enumerate(map(str, labels), first_row):
            code = codes.get(label)
            if code is None:
                code = new.get(label)
                if code is None:
                    code = len(codes) + len(new)
                    self._check_new(label, row, code)
                    new[label] = code
            out.append(code)
        return np.array(out, dtype=np.int32), list(new)

    def take(self, codes: NDArray[np.int32], new: Sequence[str]) -> None:
        for label in new:
            self.codes[label] = len(self.codes)
        self.blocks.append(codes)

    def _check_new(self, label: str, row: int, code: int) -> None:
        what = f"group column {quote(self.name)}"
        check_label_chars([label], what, row, self._limits.max_chars)
        if code >= self._limits.max_values:
            raise InvalidInput(
                f"{what}: row {row:,} brings a label past the {self._limits.max_values:,} "
                f"distinct values one column may have (LATENTWATCH_BIAS_MAX_GROUP_VALUES), "
                f"{quote(label)}; group labels should be categories"
            )


@dataclass(frozen=True)
class GroupCounts:
    """One group's counts, before the tests across groups."""

    column: str
    value: str
    n_rows: int
    n_sparse_rows: int
    weight_sum: float


def group_stats(
    counts: Sequence[GroupCounts], n_rows: int, n_sparse: int, significance_level: float
) -> list[GroupStats]:
    """Ratios, intervals, p-values, BH across all groups and flags, in the order given; the
    share figures against an even split of each column's values beside them."""
    if not counts:
        return []
    log_factorials = LogFactorials(n_sparse)
    z = _two_sided_z(significance_level)  # any level in (0, 1), however small
    p_values = np.array([
        binomial_test(c.n_sparse_rows, n_sparse, c.n_rows / n_rows, log_factorials)
        for c in counts
    ])
    significant = benjamini_hochberg(p_values, significance_level).is_outlier
    shares = even_split_tests(counts, n_rows, significance_level)
    out = []
    for c, p_value, is_significant, even in zip(counts, p_values.tolist(), significant.tolist(),
                                                shares, strict=True):
        share = c.n_rows / n_rows
        sparse_share = c.n_sparse_rows / n_sparse
        ratio = sparse_share / share
        low, high = _wilson(c.n_sparse_rows, n_sparse, z)
        outside = not DISPARITY_BAND[0] <= ratio <= DISPARITY_BAND[1]
        out.append(GroupStats(
            column=c.column, value=c.value, n_rows=c.n_rows, share=share,
            sparse_share=sparse_share, representation_ratio=ratio,
            mean_weight=c.weight_sum / c.n_rows, flagged=bool(is_significant) and outside,
            n_sparse_rows=c.n_sparse_rows, ratio_low=low / share, ratio_high=high / share,
            p_value=float(p_value), significant=bool(is_significant),
            even_share=even.even_share, share_ratio=even.share_ratio,
            share_ratio_low=even.share_ratio_low, share_ratio_high=even.share_ratio_high,
            share_p_value=even.share_p_value, share_significant=even.share_significant,
            share_flagged=even.share_flagged,
        ))
    return out


@dataclass(frozen=True)
class EvenSplitTest:
    """One group's rows against an even split of its column's values (GroupStats' share_*)."""

    even_share: float
    share_ratio: float
    share_ratio_low: float
    share_ratio_high: float
    share_p_value: float
    share_significant: bool
    share_flagged: bool


def even_split_tests(
    counts: Sequence[GroupCounts], n_rows: int, significance_level: float
) -> list[EvenSplitTest]:
    """Each group's n_rows against Binomial(n_rows, 1 / G), G the values of its column, with
    Benjamini-Hochberg over every group of the report, in the order given."""
    values_per_column: dict[str, int] = {}
    for c in counts:
        values_per_column[c.column] = values_per_column.get(c.column, 0) + 1
    log_factorials = LogFactorials(n_rows)
    z = _two_sided_z(significance_level)
    even = [1.0 / values_per_column[c.column] for c in counts]
    p_values = np.array([
        binomial_test(c.n_rows, n_rows, p0, log_factorials)
        for c, p0 in zip(counts, even, strict=True)
    ])
    significant = benjamini_hochberg(p_values, significance_level).is_outlier
    out = []
    for c, p0, p_value, is_significant in zip(counts, even, p_values.tolist(),
                                              significant.tolist(), strict=True):
        ratio = float(c.n_rows / n_rows / p0)
        low, high = _wilson(c.n_rows, n_rows, z)
        outside = not DISPARITY_BAND[0] <= ratio <= DISPARITY_BAND[1]
        out.append(EvenSplitTest(
            even_share=p0, share_ratio=ratio, share_ratio_low=low / p0,
            share_ratio_high=high / p0, share_p_value=float(p_value),
            share_significant=bool(is_significant), share_flagged=bool(is_significant) and outside,
        ))
    return out


def farthest_from_parity(groups: Iterable[GroupStats]) -> GroupStats | None:
    """The group whose ratio is farthest from 1 in log terms."""
    return max(groups, key=lambda g: abs(math.log(max(g.representation_ratio, 1e-12))),
               default=None)
