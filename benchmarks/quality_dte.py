"""A DTE-NP-style baseline: the diffusion time a row looks like it has, from its nearest neighbours.

Diffusion Time Estimation (Livernoche et al., "On Diffusion Modeling for Anomaly Detection",
ICLR 2024) scores a row by how long a diffusion process would have had to run for the row to
be a noised normal row: far from the data, only a long diffusion explains it. Its
non-parametric variant needs no network: under a variance-exploding forward process
x_t = x_0 + sigma_t * eps, eps ~ N(0, I), with x_0 a training row, the likelihood of a row x at
noise level sigma is a mixture of Gaussians centred on the training rows, which the k nearest
training rows dominate. This module is written from that description, not from the authors'
code:

- a grid of T diffusion times t = 0..T-1 with log-spaced noise levels sigma_t from SIGMA_MIN to
  SIGMA_MAX (a flat prior over t is a log-uniform prior over sigma);
- log p(x | t) = logsumexp_k [-d log sigma_t - r_k^2 / (2 sigma_t^2)] - log k (constants
  dropped), r_k the Euclidean distance to the k-th nearest training row, d the row's width;
- the score is the posterior mean diffusion time E[t | x] on that grid, divided by T - 1
  (0 = no noise, 1 = the largest noise level); higher = more anomalous.

With one neighbour, the posterior over sigma peaks at sigma^2 = r^2 / d, the noise variance
per feature that puts a row at distance r: the estimate is a smoothed (log) kNN distance, which
is why the paper finds DTE-NP close to kNN. Rows are standardised by the caller (as every
baseline is, see quality_baselines.standardize).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

DTE_K = 5  # neighbours (PyOD's kNN default too)
DTE_TIMES = 300  # diffusion steps on the grid
# Noise levels per feature, for standardised rows: from far below any neighbour spacing to far
# beyond any distance seen on the benchmark sets, so the posterior never piles up at an end.
SIGMA_MIN = 1e-4
SIGMA_MAX = 1e4
_CHUNK_ROWS = 1024


def noise_levels(n_times: int = DTE_TIMES) -> NDArray[np.float64]:
    """(T,) sigma_t, log-spaced from SIGMA_MIN to SIGMA_MAX."""
    return np.geomspace(SIGMA_MIN, SIGMA_MAX, n_times)


def diffusion_time_posterior(
    sq_distances: NDArray[np.floating], n_features: int, sigmas: NDArray[np.float64]
) -> NDArray[np.float64]:
    """(N, T) posterior over the grid's diffusion times given each row's squared distances
    (N, k) to its k nearest training rows, under a flat prior over the T times."""
    r2 = np.asarray(sq_distances, dtype=np.float64)  # (N, k)
    log_sigma = np.log(sigmas)  # (T,)
    inv_var = 1.0 / (2.0 * sigmas**2)  # (T,)
    # (N, k, T) per-neighbour log-likelihood; logsumexp over the neighbours.
    per_neighbour = -n_features * log_sigma[None, None, :] - r2[:, :, None] * inv_var[None, None]
    top = per_neighbour.max(axis=1, keepdims=True)  # (N, 1, T)
    log_lik = top[:, 0] + np.log(np.exp(per_neighbour - top).sum(axis=1))  # (N, T)
    log_post = log_lik - log_lik.max(axis=1, keepdims=True)
    post = np.exp(log_post)
    return post / post.sum(axis=1, keepdims=True)


class DTENonParametric:
    """fit(pool) keeps the training rows; decision_function(rows) is the expected diffusion
    time in [0, 1] (the PyOD detector interface the benchmark calls)."""

    def __init__(self, k: int = DTE_K, n_times: int = DTE_TIMES) -> None:
        if k < 1 or n_times < 2:
            raise ValueError("k must be >= 1 and n_times >= 2")
        self.k = k
        self.sigmas = noise_levels(n_times)
        self._index = None
        self._n_features = 0

    def fit(self, pool: NDArray[np.floating]) -> DTENonParametric:
        from sklearn.neighbors import NearestNeighbors

        pool = np.asarray(pool, dtype=np.float64)
        if pool.ndim != 2 or pool.shape[0] < self.k:
            raise ValueError(f"need a (P, F) pool with P >= k={self.k}, got {pool.shape}")
        self._index = NearestNeighbors(n_neighbors=self.k).fit(pool)
        self._n_features = pool.shape[1]
        return self

    def decision_function(self, rows: NDArray[np.floating]) -> NDArray[np.float64]:
        if self._index is None:
            raise RuntimeError("fit the detector first")
        rows = np.asarray(rows, dtype=np.float64)
        times = np.arange(self.sigmas.size, dtype=np.float64) / (self.sigmas.size - 1)  # (T,)
        out = np.empty(rows.shape[0], dtype=np.float64)
        for start in range(0, rows.shape[0], _CHUNK_ROWS):
            distances, _ = self._index.kneighbors(rows[start : start + _CHUNK_ROWS])  # (b, k)
            post = diffusion_time_posterior(distances**2, self._n_features, self.sigmas)
            out[start : start + len(post)] = post @ times
        return out
