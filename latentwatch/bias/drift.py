"""Drift of a dataset's latent means against the training reference stored at export.

`LatentReference` (reference.npz) summarises the encoder means of the training rows: plotting
histograms, deciles for the population stability index, moments, and the mean posterior
variance. Bias reports (latentwatch.bias.accumulator) compare a dataset's means against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REFERENCE_PLOT_BINS = 40
PSI_BINS = 10
# Burda et al. (2016): a latent unit is active when its mean moves with the input,
# Cov_x(E_q[z_j]) > 0.01. Inactive units carry no information, so drift ignores them.
ACTIVE_VARIANCE = 0.01
PSI_FLOOR = 1e-4  # empty bins would make PSI infinite
# The usual population-stability-index reading: below 0.1 no shift, 0.1-0.25 moderate.
PSI_MODERATE, PSI_SIGNIFICANT = 0.1, 0.25


def kl_to_prior(mean: NDArray, variance: NDArray) -> NDArray[np.float64]:
    """Per dimension KL(N(mean, variance) || N(0, 1)) in nats."""
    v = np.maximum(variance, 1e-12)
    return 0.5 * (v + mean**2 - 1.0 - np.log(v))


@dataclass(frozen=True, eq=False)
class LatentReference:
    """The training data's encoder means, summarised at export for drift and plots."""

    n_rows: int
    edges: NDArray[np.float64]  # (Z, P + 1) plotting bins over the training range
    share: NDArray[np.float64]  # (Z, P) share of training rows per bin
    psi_edges: NDArray[np.float64]  # (Z, PSI_BINS - 1) interior decile edges
    psi_share: NDArray[np.float64]  # (Z, PSI_BINS) training share per decile bin
    mean: NDArray[np.float64]  # (Z,)
    std: NDArray[np.float64]  # (Z,)
    cov: NDArray[np.float64]  # (Z, Z)
    sigma2_mean: NDArray[np.float64]  # (Z,) mean posterior variance (0 for autoencoders)

    @property
    def latent_dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def active(self) -> NDArray[np.bool_]:
        return self.std**2 > ACTIVE_VARIANCE

    @property
    def kl_to_prior(self) -> NDArray[np.float64]:
        return kl_to_prior(self.mean, self.sigma2_mean + self.std**2)

    @classmethod
    def from_latents(cls, mu: NDArray, logvar: NDArray | None = None) -> LatentReference:
        mu = np.asarray(mu, dtype=np.float64)
        if mu.ndim != 2 or mu.shape[0] < 2 or not np.isfinite(mu).all():
            raise ValueError(f"expected finite (N >= 2, Z) means, got shape {list(mu.shape)}")
        n, z = mu.shape
        lo, hi = np.quantile(mu, [0.0005, 0.9995], axis=0)
        pad = np.maximum(0.05 * (hi - lo), 1e-3)
        edges = np.linspace(lo - pad, hi + pad, REFERENCE_PLOT_BINS + 1, axis=1)  # (Z, P + 1)
        share = np.stack([
            np.bincount(np.clip(np.searchsorted(e, mu[:, j], "right") - 1, 0,
                                REFERENCE_PLOT_BINS - 1), minlength=REFERENCE_PLOT_BINS) / n
            for j, e in enumerate(edges)
        ])
        psi_edges = np.quantile(mu, np.arange(1, PSI_BINS) / PSI_BINS, axis=0).T  # (Z, 9)
        psi_share = np.stack([
            np.bincount(np.searchsorted(e, mu[:, j], "right"), minlength=PSI_BINS) / n
            for j, e in enumerate(psi_edges)
        ])
        sigma2 = (np.zeros(z) if logvar is None
                  else np.exp(np.asarray(logvar, dtype=np.float64)).mean(axis=0))
        return cls(
            n_rows=n, edges=edges, share=share, psi_edges=psi_edges, psi_share=psi_share,
            mean=mu.mean(axis=0), std=mu.std(axis=0), cov=np.atleast_2d(np.cov(mu, rowvar=False)),
            sigma2_mean=sigma2,
        )

    _ARRAYS = ("edges", "share", "psi_edges", "psi_share", "mean", "std", "cov", "sigma2_mean")

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, n_rows=np.int64(self.n_rows),
                     **{name: getattr(self, name) for name in self._ARRAYS})

    @classmethod
    def load(cls, path: Path) -> LatentReference:
        """Reads a reference.npz; ValueError when anything is missing, malformed or not finite."""
        with np.load(path, allow_pickle=False) as f:
            missing = sorted({"n_rows", *cls._ARRAYS} - set(f.files))
            if missing:
                raise ValueError(f"{path.name} lacks {missing}")
            arrays = {name: np.asarray(f[name], dtype=np.float64) for name in cls._ARRAYS}
            n_rows = int(f["n_rows"])
        z = arrays["mean"].shape[0] if arrays["mean"].ndim == 1 else -1
        expected = {
            "edges": (z, REFERENCE_PLOT_BINS + 1), "share": (z, REFERENCE_PLOT_BINS),
            "psi_edges": (z, PSI_BINS - 1), "psi_share": (z, PSI_BINS), "mean": (z,),
            "std": (z,), "cov": (z, z), "sigma2_mean": (z,),
        }
        for name, shape in expected.items():
            if z < 1 or arrays[name].shape != shape:
                raise ValueError(f"{path.name}: {name} has shape {list(arrays[name].shape)}, "
                                 f"expected {list(shape)}")
            if not np.isfinite(arrays[name]).all():
                raise ValueError(f"{path.name}: {name} holds NaN or infinite values")
        if n_rows < 2:
            raise ValueError(f"{path.name}: n_rows is {n_rows}, expected at least 2")
        return cls(n_rows=n_rows, **arrays)


@dataclass(frozen=True, eq=False)
class ReferenceComparison:
    edges: NDArray[np.float64]  # (Z, P + 1) the reference's plotting bins
    reference_share: NDArray[np.float64]  # (Z, P)
    share: NDArray[np.float64]  # (Z, P) this data's share per reference bin
    below: NDArray[np.float64]  # (Z,) this data's share below the reference range
    above: NDArray[np.float64]  # (Z,) ... and above it


@dataclass(frozen=True, eq=False)
class Drift:
    overall: float  # mean PSI over the reference's active dimensions
    level: str  # none, moderate, significant
    psi: NDArray[np.float64]  # (Z,) population stability index on the reference's deciles
    mean_shift: NDArray[np.float64]  # (Z,) (mean - reference mean) / reference std
    active: NDArray[np.bool_]  # (Z,)
    max_psi: float
    max_psi_dimension: int
    gaussian_kl: float  # KL(N(this data) || N(reference)) over active dims, nats
    reference_rows: int


def compare_to_reference(
    blocks: Sequence[NDArray], reference: LatentReference, n: int
) -> ReferenceComparison:
    z, p = reference.share.shape
    counts = np.zeros((z, p + 2))  # below, the P bins, above
    for block in blocks:
        for j in range(z):
            index = np.searchsorted(reference.edges[j], block[:, j], "right")  # 0 below, P+1 above
            index[block[:, j] == reference.edges[j, -1]] = p  # the top edge is in the last bin
            counts[j] += np.bincount(index, minlength=p + 2)
    counts /= n
    return ReferenceComparison(
        edges=reference.edges, reference_share=reference.share, share=counts[:, 1:-1],
        below=counts[:, 0], above=counts[:, -1],
    )


def drift_from_reference(
    blocks: Sequence[NDArray], reference: LatentReference, n: int, mean: NDArray, cov: NDArray
) -> Drift:
    z = reference.latent_dim
    counts = np.zeros((z, PSI_BINS))
    for block in blocks:
        for j in range(z):
            counts[j] += np.bincount(
                np.searchsorted(reference.psi_edges[j], block[:, j], "right"), minlength=PSI_BINS
            )
    share = np.maximum(counts / n, PSI_FLOOR)
    ref_share = np.maximum(reference.psi_share, PSI_FLOOR)
    psi = ((share - ref_share) * np.log(share / ref_share)).sum(axis=1)
    active = reference.active
    used = active if active.any() else np.ones(z, dtype=bool)
    overall = float(psi[used].mean())
    level = ("none" if overall < PSI_MODERATE
             else "moderate" if overall < PSI_SIGNIFICANT else "significant")
    top = int(np.argmax(np.where(used, psi, -np.inf)))
    return Drift(
        overall=overall,
        level=level,
        psi=psi,
        mean_shift=(mean - reference.mean) / np.maximum(reference.std, 1e-6),
        active=active,
        max_psi=float(psi[top]),
        max_psi_dimension=top,
        gaussian_kl=_gaussian_kl(mean[used], cov[np.ix_(used, used)],
                                 reference.mean[used], reference.cov[np.ix_(used, used)]),
        reference_rows=reference.n_rows,
    )


def _gaussian_kl(m1: NDArray, s1: NDArray, m0: NDArray, s0: NDArray) -> float:
    """KL(N(m1, s1) || N(m0, s0)) in nats; covariances get a small ridge to stay invertible."""
    k = m1.shape[0]
    ridge = 1e-6 * np.eye(k)
    s1, s0 = s1 + ridge, s0 + ridge
    diff = m0 - m1
    trace = np.trace(np.linalg.solve(s0, s1))
    mahalanobis = float(diff @ np.linalg.solve(s0, diff))
    logdet0 = np.linalg.slogdet(s0)[1]
    logdet1 = np.linalg.slogdet(s1)[1]
    return float(max(0.5 * (trace + mahalanobis - k + logdet0 - logdet1), 0.0))
