"""A Gaussian mixture of the latent means, fitted by EM (numpy): a density benchmarks/bias_digits.py
measures beside the report's k-NN density.

Full covariances with a ridge of REG times the means' mean variance, k-means++ starts from a seeded
generator. One fit depends on its start; `mixture_log_density` averages the log densities of
`restarts` fits from seeds 0..restarts-1, which is what makes it repeatable.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

REG = 1e-3
MAX_ITERATIONS = 200
TOLERANCE = 1e-6  # stop when the mean log-likelihood gains less than this


def _logsumexp(a: NDArray, axis: int) -> NDArray[np.float64]:
    top = a.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def _component_log_pdf(x: NDArray, means: NDArray, chol: NDArray) -> NDArray[np.float64]:
    """(n, Z) rows -> (n, K) log N(x | mean_k, L_k L_k^T)."""
    n, z = x.shape
    out = np.empty((n, means.shape[0]))
    for k in range(means.shape[0]):
        d = np.linalg.solve(chol[k], (x - means[k]).T)  # (Z, n) whitened offsets
        log_det = 2.0 * np.log(np.diag(chol[k])).sum()
        out[:, k] = -0.5 * ((d**2).sum(0) + log_det + z * np.log(2 * np.pi))
    return out


def _kmeans_pp(x: NDArray, k: int, rng: np.random.Generator) -> NDArray[np.float64]:
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        centres.append(x[rng.choice(len(x), p=d2 / d2.sum())])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    return np.array(centres)


def fit_mixture(
    x: NDArray, components: int, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """EM from a k-means++ start: (weights (K,), means (K, Z), Cholesky factors (K, Z, Z))."""
    x = np.asarray(x, dtype=np.float64)
    n, z = x.shape
    ridge = REG * float(x.var(axis=0).mean()) * np.eye(z)
    d2 = ((x[:, None, :] - _kmeans_pp(x, components, np.random.default_rng(seed))) ** 2).sum(-1)
    resp = np.zeros((n, components))
    resp[np.arange(n), d2.argmin(1)] = 1.0
    previous = -np.inf
    for _ in range(MAX_ITERATIONS):
        nk = resp.sum(0) + 1e-10
        weights, means = nk / n, resp.T @ x / nk[:, None]
        chol = np.stack([np.linalg.cholesky((resp[:, k, None] * (x - means[k])).T
                                            @ (x - means[k]) / nk[k] + ridge)
                         for k in range(components)])
        joint = _component_log_pdf(x, means, chol) + np.log(weights)
        log_lik = _logsumexp(joint, 1)
        resp = np.exp(joint - log_lik[:, None])
        if log_lik.mean() - previous < TOLERANCE:
            break
        previous = float(log_lik.mean())
    return weights, means, chol


def mixture_log_density(x: NDArray, components: int, restarts: int,
                        first_seed: int = 0) -> NDArray[np.float64]:
    """The mean over `restarts` fits (seeds first_seed, first_seed + 1, ...) of each row's
    log density under the fitted mixture."""
    x = np.asarray(x, dtype=np.float64)
    fits = [fit_mixture(x, components, first_seed + s) for s in range(restarts)]
    return np.mean([_logsumexp(_component_log_pdf(x, m, c) + np.log(w), 1)
                    for w, m, c in fits], axis=0)
