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

Weights are reported with mean 1 (a row of weight 3 should be drawn three times as often as an
average row). Drift compares this data's means with the training reference stored at export.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.options import DEFAULT_ALPHA, DEFAULT_BINS, DEFAULT_MODE, BiasOptions

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


def resampling_log_weights(
    mu: NDArray, bins: int = DEFAULT_BINS, alpha: float = DEFAULT_ALPHA, mode: str = DEFAULT_MODE
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(N, Z) encoder means -> per-row log density and log weight (weights sum to 1)."""
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[0] < 1:
        raise ValueError(f"expected (N, Z) means with N >= 1, got shape {list(mu.shape)}")
    BiasOptions(bins=bins, alpha=alpha, mode=mode).validated()
    blocks = _row_blocks(mu)
    hist = latent_histograms(blocks, mu.min(axis=0), mu.max(axis=0), mu.shape[0], bins)
    return log_density_and_weight(blocks, hist, alpha, mode)
