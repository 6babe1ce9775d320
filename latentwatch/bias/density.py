"""Latent-density bias reports after the debiasing VAE (DB-VAE, Amini et al., AIES 2019).

Pure numpy, shared by the service (BiasReport RPC), the client, DB-VAE training and export.

From the encoder means mu (N, Z) of a dataset: one histogram per latent dimension over this
data's own range, density Qhat_j per unit of latent, smoothing alpha.

- log_density(x) = sum_j log Qhat_j(mu_j(x)): the product of the marginal densities, in logs.
- paper weighting: W(x) proportional to prod_j 1 / (Qhat_j(mu_j(x)) + alpha). The literal product
  underflows or overflows with many dimensions, so it is a sum of logs normalised by log-sum-exp.
- max weighting (the lab's): per dimension p_j(x) = 1 / (Qhat_j + alpha), normalised over the
  rows; W(x) = max_j p_j(x), normalised.

Weights are reported with mean 1 (a row of weight 3 should be drawn three times as often as an
average row). Drift compares this data's means with the training reference stored at export.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.drift import (
    Drift,
    LatentReference,
    ReferenceComparison,
    compare_to_reference,
    drift_from_reference,
    kl_to_prior,
)
from latentwatch.errors import InvalidInput

log = logging.getLogger(__name__)

MODES = ("paper", "max")
# "max" by default: with many latent dimensions the paper's product puts nearly all the weight on
# a handful of rows (benchmarks/bias.py: effective sample size 1 of 54,120 rows at 16 latent
# dimensions, against 2,312 for "max"), which is no use for resampling.
DEFAULT_MODE = "max"
DEFAULT_BINS = 10
DEFAULT_ALPHA = 1e-3
DEFAULT_TOP_K = 20
DEFAULT_SPARSE_FRACTION = 0.1
DISPARITY_BAND = (0.8, 1.25)
DEFAULT_MAX_GROUP_VALUES = 1000

MAX_BINS = 1000
MAX_TOP_K = 10_000
ROW_BLOCK = 65_536  # rows per block in per-row passes: bounds the (rows, Z) temporaries


def _logsumexp(values: NDArray[np.float64]) -> float:
    top = float(np.max(values))
    if not np.isfinite(top):
        return top
    return top + float(np.log(np.sum(np.exp(values - top))))


def effective_sample_size(log_weight: NDArray) -> float:
    """(sum w)^2 / sum w^2, from log weights of any normalisation."""
    lw = np.asarray(log_weight, dtype=np.float64)
    return float(np.exp(2.0 * _logsumexp(lw) - _logsumexp(2.0 * lw)))


@dataclass(frozen=True)
class _Histograms:
    """Per-dimension histograms over this data's range; density per unit of latent."""

    lo: NDArray[np.float64]  # (Z,)
    width: NDArray[np.float64]  # (Z,) bin width
    counts: NDArray[np.int64]  # (Z, bins)
    density: NDArray[np.float64]  # (Z, bins)

    @property
    def bins(self) -> int:
        return int(self.counts.shape[1])

    def edges(self, j: int) -> NDArray[np.float64]:
        return self.lo[j] + self.width[j] * np.arange(self.bins + 1)

    def bin_index(self, mu: NDArray) -> NDArray[np.intp]:
        """(n, Z) means -> (n, Z) bin indices; the top edge belongs to the last bin."""
        index = np.floor((mu - self.lo) / self.width).astype(np.intp)
        return np.clip(index, 0, self.bins - 1)


def _histograms(
    blocks: Sequence[NDArray], lo: NDArray, hi: NDArray, n_rows: int, bins: int
) -> _Histograms:
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    flat = hi <= lo  # a constant dimension: one value, put it mid-range of a unit-wide histogram
    lo = np.where(flat, lo - 0.5, lo)
    width = np.where(flat, 1.0, hi - lo) / bins
    z = lo.shape[0]
    partial = _Histograms(lo, width, np.zeros((z, bins), np.int64), np.zeros((z, bins)))
    offsets = np.arange(z) * bins
    counts = np.zeros(z * bins, dtype=np.int64)
    for block in blocks:
        counts += np.bincount((partial.bin_index(block) + offsets).ravel(), minlength=z * bins)
    counts = counts.reshape(z, bins)
    density = counts / (n_rows * width[:, None])
    return _Histograms(lo, width, counts, density)


def _row_blocks(mu: NDArray) -> list[NDArray]:
    return [mu[s : s + ROW_BLOCK] for s in range(0, mu.shape[0], ROW_BLOCK)]


def _log_density_and_weight(
    blocks: Sequence[NDArray], hist: _Histograms, alpha: float, mode: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-row log density and normalised log weight (sum of exp = 1)."""
    with np.errstate(divide="ignore"):  # alpha 0 with an empty bin is never looked up
        log_q = np.log(hist.density)  # (Z, bins); every looked-up bin holds its own row
        log_q_alpha = np.log(hist.density + alpha)
    log_norm = None
    if mode == "max":
        # Per-dimension normaliser sum_i 1 / (Qhat_j(x_i) + alpha), summed bin by bin.
        with np.errstate(divide="ignore", invalid="ignore"):
            masked = np.where(hist.counts > 0, np.log(hist.counts) - log_q_alpha, -np.inf)
        log_norm = np.array([_logsumexp(row) for row in masked])[None, :]  # (1, Z)
    dims = np.arange(hist.counts.shape[0])
    log_density, log_weight = [], []
    for block in blocks:
        index = hist.bin_index(block)  # (n, Z)
        log_density.append(log_q[dims, index].sum(axis=1))
        terms = log_q_alpha[dims, index]  # (n, Z) log(Qhat + alpha)
        if mode == "paper":
            log_weight.append(-terms.sum(axis=1))
        else:
            log_weight.append(-(terms + log_norm).min(axis=1))
    lw = np.concatenate(log_weight)
    return np.concatenate(log_density), lw - _logsumexp(lw)


def resampling_log_weights(
    mu: NDArray, bins: int = DEFAULT_BINS, alpha: float = DEFAULT_ALPHA, mode: str = DEFAULT_MODE
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(N, Z) encoder means -> per-row log density and log weight (weights sum to 1)."""
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[0] < 1:
        raise ValueError(f"expected (N, Z) means with N >= 1, got shape {list(mu.shape)}")
    BiasOptions(bins=bins, alpha=alpha, mode=mode).validated()
    blocks = _row_blocks(mu)
    hist = _histograms(blocks, mu.min(axis=0), mu.max(axis=0), mu.shape[0], bins)
    return _log_density_and_weight(blocks, hist, alpha, mode)


@dataclass(frozen=True)
class BiasOptions:
    bins: int = DEFAULT_BINS
    alpha: float = DEFAULT_ALPHA
    mode: str = DEFAULT_MODE
    top_k: int = DEFAULT_TOP_K
    sparse_fraction: float = DEFAULT_SPARSE_FRACTION

    def validated(self) -> BiasOptions:
        if not 2 <= self.bins <= MAX_BINS:
            raise InvalidInput(f"bins: expected 2 to {MAX_BINS} histogram bins, got {self.bins}")
        if not (np.isfinite(self.alpha) and self.alpha >= 0):
            raise InvalidInput(f"alpha: expected a finite smoothing >= 0, got {self.alpha}")
        if self.mode not in MODES:
            raise InvalidInput(f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0 <= self.top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k: expected 0 to {MAX_TOP_K} rows, got {self.top_k}")
        if not 0 < self.sparse_fraction <= 0.5:
            raise InvalidInput(
                f"sparse_fraction: expected a share in (0, 0.5], got {self.sparse_fraction}"
            )
        return self


@dataclass(frozen=True, eq=False)
class DimensionHistogram:
    edges: NDArray[np.float64]  # (bins + 1,)
    counts: NDArray[np.int64]  # (bins,)


@dataclass(frozen=True)
class GroupStats:
    column: str
    value: str
    n_rows: int
    share: float  # of all rows
    sparse_share: float  # of the sparsest rows
    representation_ratio: float  # sparse_share / share; > 1: found in sparse regions
    mean_weight: float  # weights have mean 1 over all rows
    flagged: bool  # ratio outside DISPARITY_BAND


@dataclass(frozen=True, eq=False)
class BiasReport:
    n_rows: int
    latent_dim: int
    options: BiasOptions
    ids: list[str] | None  # None: a row's id is its position
    log_density: NDArray[np.float64]  # (N,)
    weight: NDArray[np.float64]  # (N,) mean 1
    effective_sample_size: float
    histograms: list[DimensionHistogram]  # (Z) over this data's range
    sparsest: NDArray[np.int64]  # (k,) positions, lowest density first
    densest: NDArray[np.int64]  # (k,) positions, highest density first
    groups: list[GroupStats]
    worst_group_ratio: float | None
    kl_to_prior: NDArray[np.float64]  # (Z,)
    reference: ReferenceComparison | None
    drift: Drift | None
    reference_kl_to_prior: NDArray[np.float64] | None
    decoded_sparsest: NDArray[np.float32] | None = None  # (k', F) decoder means, model space
    decoded_densest: NDArray[np.float32] | None = None

    @property
    def effective_sample_fraction(self) -> float:
        return self.effective_sample_size / self.n_rows

    @property
    def kl_to_prior_total(self) -> float:
        return float(self.kl_to_prior.sum())

    def id_of(self, position: int) -> str:
        return str(position) if self.ids is None else self.ids[position]

    def with_decoded(self, sparsest: NDArray | None, densest: NDArray | None) -> BiasReport:
        return replace(self, decoded_sparsest=sparsest, decoded_densest=densest)


@dataclass
class _GroupColumn:
    codes: dict[str, int] = field(default_factory=dict)
    blocks: list[NDArray[np.int32]] = field(default_factory=list)


class BiasAccumulator:
    """Collects encoder means chunk by chunk in bounded memory, then builds the report.

    Per row it keeps the float32 means, the id and one int32 code per group column; the moments
    drift and KL need are running float64 sums.
    """

    def __init__(
        self, latent_dim: int, *, max_rows: int,
        max_group_values: int = DEFAULT_MAX_GROUP_VALUES,
    ) -> None:
        if latent_dim < 1 or max_rows < 1:
            raise ValueError("latent_dim and max_rows must be positive")
        self.latent_dim = latent_dim
        self.max_rows = max_rows
        self.max_group_values = max_group_values
        self._mu: list[NDArray[np.float32]] = []
        self._ids: list[str] | None = None
        self._groups: dict[str, _GroupColumn] | None = None
        self._n = 0
        self._sum = np.zeros(latent_dim)
        self._outer = np.zeros((latent_dim, latent_dim))
        self._sigma2 = np.zeros(latent_dim)
        self._lo = np.full(latent_dim, np.inf)
        self._hi = np.full(latent_dim, -np.inf)

    @property
    def n_rows(self) -> int:
        return self._n

    def add(
        self,
        mu: NDArray,
        logvar: NDArray | None = None,
        ids: Sequence[str] | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        mu = np.asarray(mu, dtype=np.float32)
        if mu.ndim != 2 or mu.shape[1] != self.latent_dim:
            raise InvalidInput(f"expected (n, {self.latent_dim}) latent means, "
                               f"got {list(mu.shape)}")
        n = mu.shape[0]
        if n == 0:
            return
        if self._n + n > self.max_rows:
            raise InvalidInput(
                f"a bias report takes at most {self.max_rows:,} rows (LATENTWATCH_BIAS_MAX_ROWS); "
                f"this stream sent more"
            )
        if not np.isfinite(mu).all():
            raise InvalidInput("the encoder gave non-finite means for some rows")
        ids = list(ids) if ids else None
        if ids is not None and len(ids) != n:
            raise InvalidInput(f"ids: {len(ids)} given for a chunk of {n} rows")
        first = self._n == 0
        if not first and (ids is None) != (self._ids is None):
            raise InvalidInput("ids: give them with every chunk or with none")
        groups = dict(groups) if groups else {}
        if not first and set(groups) != set(self._groups or {}):
            raise InvalidInput(
                f"group columns must be the same in every chunk: first {sorted(self._groups or {})}"
                f", now {sorted(groups)}"
            )
        for name, values in groups.items():
            if not name:
                raise InvalidInput("group columns need a name")
            if len(values) != n:
                raise InvalidInput(f"group column {name!r}: {len(values)} labels for {n} rows")
        # Every check is done: from here the chunk is taken whole.
        if first:
            self._ids = [] if ids is not None else None
            self._groups = {name: _GroupColumn() for name in groups}
        for name, values in groups.items():
            self._add_group(name, values)
        if ids is not None and self._ids is not None:
            self._ids.extend(str(i) for i in ids)
        self._mu.append(mu)
        self._n += n
        mu64 = mu.astype(np.float64)
        self._sum += mu64.sum(axis=0)
        self._outer += mu64.T @ mu64
        if logvar is not None:
            self._sigma2 += np.exp(np.asarray(logvar, dtype=np.float64)).sum(axis=0)
        np.minimum(self._lo, mu64.min(axis=0), out=self._lo)
        np.maximum(self._hi, mu64.max(axis=0), out=self._hi)

    def _add_group(self, name: str, values: Sequence[str]) -> None:
        assert self._groups is not None
        column = self._groups[name]
        labels = np.asarray([str(v) for v in values])
        uniques, inverse = np.unique(labels, return_inverse=True)
        for u in uniques:
            if str(u) not in column.codes:
                if len(column.codes) >= self.max_group_values:
                    raise InvalidInput(
                        f"group column {name!r} has more than {self.max_group_values} distinct "
                        f"values; group labels should be categories"
                    )
                column.codes[str(u)] = len(column.codes)
        mapping = np.array([column.codes[str(u)] for u in uniques], dtype=np.int32)
        column.blocks.append(mapping[inverse])

    def finish(self, options: BiasOptions, reference: LatentReference | None) -> BiasReport:
        options = options.validated()
        n = self._n
        if n < 2:
            raise InvalidInput(f"a bias report needs at least 2 rows, got {n}")
        if reference is not None and reference.latent_dim != self.latent_dim:
            raise ValueError("the reference's latent width differs from the model's")
        blocks = self._mu
        hist = _histograms(blocks, self._lo, self._hi, n, options.bins)
        log_density, log_weight = _log_density_and_weight(
            blocks, hist, options.alpha, options.mode
        )
        weight = np.exp(log_weight + np.log(n))  # mean 1; extreme rows may underflow to 0
        k = min(options.top_k, n)
        order = np.argsort(log_density, kind="stable")
        mean = self._sum / n
        cov = (self._outer - n * np.outer(mean, mean)) / (n - 1)
        variance = np.maximum(np.diag(cov) * (n - 1) / n, 0.0)
        groups = self._group_stats(log_density, weight, options.sparse_fraction)
        worst = max((g.representation_ratio for g in groups),
                    key=lambda r: abs(np.log(max(r, 1e-12))), default=None)
        comparison = drift = None
        if reference is not None:
            comparison = compare_to_reference(blocks, reference, n)
            drift = drift_from_reference(blocks, reference, n, mean, cov)
        return BiasReport(
            n_rows=n,
            latent_dim=self.latent_dim,
            options=options,
            ids=list(self._ids) if self._ids is not None else None,
            log_density=log_density,
            weight=weight,
            effective_sample_size=effective_sample_size(log_weight),
            histograms=[DimensionHistogram(hist.edges(j), hist.counts[j])
                        for j in range(self.latent_dim)],
            sparsest=order[:k].astype(np.int64),
            densest=order[::-1][:k].astype(np.int64),
            groups=groups,
            worst_group_ratio=worst,
            kl_to_prior=kl_to_prior(mean, self._sigma2 / n + variance),
            reference=comparison,
            drift=drift,
            reference_kl_to_prior=None if reference is None else reference.kl_to_prior,
        )

    def _group_stats(
        self, log_density: NDArray, weight: NDArray, sparse_fraction: float
    ) -> list[GroupStats]:
        n = self._n
        n_sparse = max(1, int(round(sparse_fraction * n)))
        sparse = np.zeros(n, dtype=bool)
        sparse[np.argpartition(log_density, n_sparse - 1)[:n_sparse]] = True
        stats = []
        for name, column in (self._groups or {}).items():
            codes = np.concatenate(column.blocks)
            m = len(column.codes)
            counts = np.bincount(codes, minlength=m)
            sparse_counts = np.bincount(codes[sparse], minlength=m)
            weight_sums = np.bincount(codes, weights=weight, minlength=m)
            for value, code in sorted(column.codes.items(), key=lambda item: item[0]):
                share = counts[code] / n
                sparse_share = sparse_counts[code] / n_sparse
                ratio = float(sparse_share / share)
                stats.append(GroupStats(
                    column=name, value=value, n_rows=int(counts[code]), share=float(share),
                    sparse_share=float(sparse_share), representation_ratio=ratio,
                    mean_weight=float(weight_sums[code] / counts[code]),
                    flagged=not DISPARITY_BAND[0] <= ratio <= DISPARITY_BAND[1],
                ))
        return stats
