"""Latent densities and resampling weights of the debiasing VAE (DB-VAE, Amini et al., AIES 2019).

Pure numpy, shared by DB-VAE training and the bias report (latentwatch.bias.accumulator builds
the report; latentwatch.bias.options holds the options and their validation).

From the encoder means mu (N, Z) of a dataset: one histogram per latent dimension over this
data's own range, density Qhat_j per unit of latent, smoothing alpha.

- log_density(x) = sum_j log Qhat_j(mu_j(x)): the product of the marginal densities, in logs.
- paper weighting: W(x) proportional to prod_j 1 / (Qhat_j(mu_j(x)) + alpha). The literal product
  underflows or overflows with many dimensions, so it is a sum of logs normalised by log-sum-exp.
- max weighting (the lab's): per dimension p_j(x) = 1 / (Qhat_j + alpha), normalised over the
  rows; W(x) = max_j p_j(x), normalised.
- knn weighting: W(x) proportional to p(x)^(-KNN_WEIGHT_POWER / Z), p the k-NN density of the
  joint means with k of KNN_WEIGHT_FRACTION (knn_log_weights); bins and alpha do not enter.

Weights are reported with mean 1 (a row of weight 3 should be drawn three times as often as an
average row). Drift compares this data's means with the training reference stored at export.

The bias report ranks its rows by a density of the joint means instead (BiasOptions.density,
"knn" by default): the product of marginals calls a row dense when each of its coordinates is
common, so a rare group sitting in the middle of every marginal is never sparse. knn_log_density
is the k-nearest-neighbour estimate, k a fixed share of the rows (KNN_FRACTION), averaged over the
first k neighbours (see knn_log_density).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.options import DEFAULT_ALPHA, DEFAULT_BINS, DEFAULT_MODE, BiasOptions

ROW_BLOCK = 65_536  # rows per block in per-row passes: bounds the (rows, Z) temporaries
# k-NN density: k is this share of the reference rows (at least 1). Local scales win on digits
# with one digit kept at 3% (benchmarks/bias_digits.py, 100 reports): k of 0.5% of the rows found
# the rare digit in 55, 0.2% and 1% in 54, 2% in 51, 5% in 45; the histograms in 28. The rare
# digit's enrichment among the sparsest 5% (results/bias-digits.json, 30 reports) is higher at
# 5% (3.70 against 3.19), but on Fashion-MNIST with a class kept at 2%
# (results/bias-fashion-mnist.json) a k of 5% dilutes a group of 0.2% of the rows: Bag 2.7
# against 4.7, Trouser 1.3 against 3.0.
KNN_FRACTION = 0.005
# The "knn" weights' k-NN density takes k of this share: measured for DB-VAE training
# (benchmarks/bias.py), where it drew the rare class more often than "max" for both rare classes.
KNN_WEIGHT_FRACTION = 0.05
# "knn" weights: W(x) proportional to p(x)^(-KNN_WEIGHT_POWER / Z), the k-NN density p of the
# means in Z dimensions (k of KNN_WEIGHT_FRACTION); p^(-1/Z) is proportional to the geometric
# mean distance to the k nearest rows, so W is that distance to this power. 1/p itself spans
# hundreds of nats over 16 dimensions and would put every draw on a few rows (as "paper" does).
KNN_WEIGHT_POWER = 4.0
# Neighbours are looked for among all rows up to this many; a larger report draws a seeded sample
# of this many rows (without replacement) and measures every row against it, so k is 20 rows and
# the cost is rows x MAX_REFERENCE_ROWS distances (see knn_log_density; benchmarks/bias_digits.py
# --timing-rows times it).
MAX_REFERENCE_ROWS = 4096
REFERENCE_SEED = 0
# (rows, reference) float64 distance blocks hold at most this many entries (16 MiB each).
KNN_BLOCK_ENTRIES = 1 << 21
# Distances below this share of the means' spread count as this: duplicated means would
# otherwise give an infinite density.
MIN_DISTANCE_SHARE = 1e-6


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
class Histograms:
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


def latent_histograms(
    blocks: Sequence[NDArray], lo: NDArray, hi: NDArray, n_rows: int, bins: int
) -> Histograms:
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    flat = hi <= lo  # a constant dimension: one value, put it mid-range of a unit-wide histogram
    lo = np.where(flat, lo - 0.5, lo)
    width = np.where(flat, 1.0, hi - lo) / bins
    z = lo.shape[0]
    partial = Histograms(lo, width, np.zeros((z, bins), np.int64), np.zeros((z, bins)))
    offsets = np.arange(z) * bins
    counts = np.zeros(z * bins, dtype=np.int64)
    for block in blocks:
        counts += np.bincount((partial.bin_index(block) + offsets).ravel(), minlength=z * bins)
    counts = counts.reshape(z, bins)
    density = counts / (n_rows * width[:, None])
    return Histograms(lo, width, counts, density)


def _row_blocks(mu: NDArray) -> list[NDArray]:
    return [mu[s : s + ROW_BLOCK] for s in range(0, mu.shape[0], ROW_BLOCK)]


def log_density_and_weight(
    blocks: Sequence[NDArray], hist: Histograms, alpha: float, mode: str
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


def knn_log_weights(knn_log_density: NDArray, latent_dim: int) -> NDArray[np.float64]:
    """Per-row k-NN log densities -> "knn" log weights, normalised (sum of exp = 1)."""
    lw = -(KNN_WEIGHT_POWER / latent_dim) * np.asarray(knn_log_density, dtype=np.float64)
    return lw - _logsumexp(lw)


def resampling_log_weights(
    mu: NDArray, bins: int = DEFAULT_BINS, alpha: float = DEFAULT_ALPHA, mode: str = DEFAULT_MODE
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(N, Z) encoder means -> per-row log density and log weight (weights sum to 1).

    The log density is the one the weights come from: the product of the marginal histograms for
    "max" and "paper", the k-NN density for "knn"."""
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[0] < 1:
        raise ValueError(f"expected (N, Z) means with N >= 1, got shape {list(mu.shape)}")
    BiasOptions(bins=bins, alpha=alpha, mode=mode).validated()
    blocks = _row_blocks(mu)
    if mode == "knn":
        if mu.shape[0] < 2:
            raise ValueError("knn weights need at least 2 rows")
        log_density = knn_log_density(blocks, mu.shape[0], fraction=KNN_WEIGHT_FRACTION)
        return log_density, knn_log_weights(log_density, mu.shape[1])
    hist = latent_histograms(blocks, mu.min(axis=0), mu.max(axis=0), mu.shape[0], bins)
    return log_density_and_weight(blocks, hist, alpha, mode)


# --- k-nearest-neighbour density of the report ----------------------------------------------


def fixed_blocks(blocks: Sequence[NDArray], rows: int) -> Iterator[NDArray[np.float64]]:
    """The rows of `blocks`, in order, re-cut into float64 blocks of `rows` (the last shorter):
    the same blocks however the data was chunked, so the same floating-point results."""
    pending: list[NDArray] = []
    held = 0
    for block in blocks:
        start = 0
        while start < block.shape[0]:
            piece = block[start : start + rows - held]
            pending.append(piece)
            held += piece.shape[0]
            start += piece.shape[0]
            if held == rows:
                yield np.concatenate(pending, dtype=np.float64)
                pending, held = [], 0
    if held:
        yield np.concatenate(pending, dtype=np.float64)


@dataclass(frozen=True)
class NeighbourReference:
    """The rows every row's neighbours are looked for among, and the k to use."""

    rows: NDArray[np.float64]  # (m, Z)
    positions: NDArray[np.int64]  # (m,) increasing positions of those rows in the report
    k: int
    min_distance: float

    @property
    def size(self) -> int:
        return int(self.positions.shape[0])


def neighbour_reference(
    blocks: Sequence[NDArray], n_rows: int, fraction: float = KNN_FRACTION,
    max_rows: int = MAX_REFERENCE_ROWS, seed: int = REFERENCE_SEED,
) -> NeighbourReference:
    """Every row when there are at most `max_rows`, else a seeded sample of `max_rows` rows."""
    if n_rows < 2:
        raise ValueError(f"a k-NN density needs at least 2 rows, got {n_rows}")
    if n_rows <= max_rows:
        positions = np.arange(n_rows, dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        positions = np.sort(rng.choice(n_rows, size=max_rows, replace=False)).astype(np.int64)
    parts, offset = [], 0
    for block in blocks:
        lo, hi = np.searchsorted(positions, [offset, offset + block.shape[0]])
        parts.append(np.asarray(block[positions[lo:hi] - offset], dtype=np.float64))
        offset += block.shape[0]
    rows = np.concatenate(parts)
    m = rows.shape[0]
    k = int(min(m - 1, max(1, round(fraction * m))))  # a reference row is not its own neighbour
    spread = float(np.sqrt(rows.var(axis=0).sum()))
    return NeighbourReference(rows, positions, k, MIN_DISTANCE_SHARE * (spread or 1.0))


def _mean_digamma(k: int) -> float:
    """(1/k) sum_{j=1..k} digamma(j), from digamma(j + 1) = digamma(j) + 1/j."""
    digamma = -0.5772156649015329  # digamma(1) = -Euler's constant
    total = 0.0
    for j in range(1, k + 1):
        total += digamma
        digamma += 1.0 / j
    return total / k


def knn_log_density(
    blocks: Sequence[NDArray], n_rows: int, fraction: float = KNN_FRACTION,
    max_reference_rows: int = MAX_REFERENCE_ROWS, seed: int = REFERENCE_SEED,
) -> NDArray[np.float64]:
    """(N, Z) means in chunks -> (N,) log density per unit of latent volume, k-NN estimate.

    Under a density p that is flat near x, the j-th nearest of m reference rows at distance r_j
    gives log p(x) = digamma(j) - log(m V_Z r_j^Z) on average (V_Z: the unit ball's volume;
    Kozachenko and Leonenko). The estimate averages this over j = 1..k, which is steadier than the
    k-th neighbour alone. A row of the reference is not its own neighbour. Memory: the reference
    (m, Z) and one (block, m) float64 distance block of KNN_BLOCK_ENTRIES; time: N x m distances
    and a partial sort of each row's m, one core: 2,000,000 rows of 16-wide means at m = 4096
    took 437 s on a busy two-core machine, 200,000 rows 49 s (the histograms: 1.5 s).
    """
    ref = neighbour_reference(blocks, n_rows, fraction, max_reference_rows, seed)
    z = ref.rows.shape[1]
    log_unit_ball = 0.5 * z * math.log(math.pi) - math.lgamma(0.5 * z + 1.0)
    # |x - r|^2 = |x|^2 + (|r|^2 - 2 x.r): the bracket is one product with an extra column, and
    # |x|^2 is the same along a row, so it is added to the k nearest only.
    ref_aug = np.concatenate([ref.rows, np.einsum("ij,ij->i", ref.rows, ref.rows)[:, None]], 1)
    ref_aug_t = np.ascontiguousarray(ref_aug.T)  # (Z + 1, m)
    min_d2 = ref.min_distance**2
    digamma_term = _mean_digamma(ref.k)
    out = np.empty(n_rows, dtype=np.float64)
    start = 0
    for x in fixed_blocks(blocks, max(1, KNN_BLOCK_ENTRIES // ref.size)):
        n = x.shape[0]
        d2 = np.concatenate([-2.0 * x, np.ones((n, 1))], 1) @ ref_aug_t  # (n, m), less |x|^2
        # A reference row inside this block is at distance 0 from itself: not a neighbour.
        lo, hi = np.searchsorted(ref.positions, [start, start + n])
        own = ref.positions[lo:hi] - start
        d2[own, np.arange(lo, hi)] = np.inf
        d2.partition(ref.k - 1, axis=1)  # the k smallest of each row first, unordered
        near = np.maximum(d2[:, : ref.k] + np.einsum("ij,ij->i", x, x)[:, None], min_d2)
        pool = np.full(n, float(ref.size))
        pool[own] -= 1.0
        out[start : start + n] = (digamma_term - np.log(pool) - log_unit_ball
                                  - 0.5 * z * np.log(near).mean(axis=1))
        start += n
    return out
