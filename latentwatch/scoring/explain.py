"""Explanations: which features (tabular) or pixels (images) make a row unusual (numpy only).

Each feature's contribution is its reconstruction negative log-likelihood under the decoder,
at the decoder's mean for z = latent_mu, standardised against the calibration rows: how many
standard deviations it lies above what normal rows show for that feature. The NLL follows the
decoder's likelihood:

- bernoulli (data in [0, 1]): -(x log p + (1 - x) log(1 - p)), p the decoder's mean;
- gaussian, gaussian-hetero and decoders without a likelihood (the AE): (x - m)^2 / 2. For a
  fixed or learned per-feature variance this is the Gaussian NLL up to an affine map per
  feature, which the standardisation removes; the served decoder graph gives the mean only,
  so a heteroscedastic decoder's per-row variance is not used.

The per-feature mean and standard deviation come from the calibration rows at export
(export/explain_fit.py) and live in the version's explain.npz. A feature that never varies on
normal rows (a border pixel) would divide by almost nothing, so each standard deviation is at
least STD_FLOOR_SHARE of the mean standard deviation over the features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput

DEFAULT_TOP_K = 5  # ScoreRequest.explain_top_k = 0
STD_FLOOR_SHARE = 0.1
# Smallest absolute standard deviation: a model whose calibration NLLs are all equal still
# divides by a positive number.
MIN_STD = 1e-12
BERNOULLI_EPS = 1e-6  # p is kept in [eps, 1 - eps], so log p stays finite
STATISTICS = {"bernoulli": "bernoulli_nll"}  # decoder kind -> statistic; the rest below
GAUSSIAN_STATISTIC = "gaussian_nll"


def statistic_for(decoder: str | None) -> str:
    """The per-feature NLL a decoder's likelihood gives (module docstring)."""
    return STATISTICS.get(decoder or "", GAUSSIAN_STATISTIC)


def feature_nll(
    x: NDArray, recon: NDArray, statistic: str
) -> NDArray[np.float64]:
    """(N, F) model-space rows and (N, F) decoder means -> (N, F) per-feature NLL in nats."""
    x64 = np.asarray(x, dtype=np.float64)
    m64 = np.asarray(recon, dtype=np.float64)
    if statistic == "bernoulli_nll":
        p = np.clip(m64, BERNOULLI_EPS, 1.0 - BERNOULLI_EPS)
        return -(x64 * np.log(p) + (1.0 - x64) * np.log1p(-p))
    if statistic == GAUSSIAN_STATISTIC:
        return 0.5 * (x64 - m64) ** 2
    raise ValueError(f"unknown explanation statistic {statistic!r}")


@dataclass(frozen=True, eq=False)
class ExplainStats:
    """Per-feature NLL mean and (floored) standard deviation over the calibration rows."""

    statistic: str
    mean: NDArray[np.float64]  # (F,)
    std: NDArray[np.float64]  # (F,), every value >= MIN_STD

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def fit(cls, nll: NDArray, statistic: str) -> ExplainStats:
        """From (n, F) calibration NLLs (n >= 2)."""
        values = np.asarray(nll, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] < 2:
            raise ValueError(f"need (n >= 2, F) calibration NLLs, got {list(values.shape)}")
        std = values.std(axis=0, ddof=1)
        floor = max(STD_FLOOR_SHARE * float(std.mean()), MIN_STD)
        return cls(statistic, values.mean(axis=0), np.maximum(std, floor))

    def contributions(self, x: NDArray, recon: NDArray) -> NDArray[np.float64]:
        """(N, F) model-space rows and decoder means -> (N, F) standardised contributions."""
        return (feature_nll(x, recon, self.statistic) - self.mean) / self.std

    def save(self, path: Path) -> None:
        np.savez(path, statistic=np.array(self.statistic), mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path: Path, n_features: int) -> ExplainStats:
        """ValueError unless the file holds F finite means and positive standard deviations."""
        with np.load(path, allow_pickle=False) as archive:
            statistic = str(archive["statistic"].item())
            mean = np.asarray(archive["mean"], dtype=np.float64)
            std = np.asarray(archive["std"], dtype=np.float64)
        if statistic not in (*STATISTICS.values(), GAUSSIAN_STATISTIC):
            raise ValueError(f"unknown explanation statistic {statistic[:40]!r}")
        if mean.shape != (n_features,) or std.shape != (n_features,):
            raise ValueError(f"mean {list(mean.shape)} and std {list(std.shape)}; the model has "
                             f"{n_features} features")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std >= MIN_STD).all()):
            raise ValueError("mean or std holds NaN, infinite or non-positive values")
        return cls(statistic, mean, std)


@dataclass(frozen=True, eq=False)
class Explanations:
    """Per row, its top-k features, largest contribution first (one k for every row)."""

    features: NDArray[np.int64]  # (N, k) indices into the flattened row
    contributions: NDArray[np.float64]  # (N, k)
    names: tuple[tuple[str, ...], ...]  # (N, k) feature names; "" where the model has none

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @classmethod
    def concat(cls, parts: Sequence[Explanations]) -> Explanations:
        return cls(
            np.concatenate([p.features for p in parts]),
            np.concatenate([p.contributions for p in parts]),
            tuple(row for p in parts for row in p.names),
        )

    def dense(self, n_features: int) -> NDArray[np.float64]:
        """(N, F) contributions with NaN where a feature is not among a row's top k."""
        out = np.full((len(self), n_features), np.nan)
        np.put_along_axis(out, self.features, self.contributions, axis=1)
        return out


def resolve_top_k(requested: int, n_features: int) -> int:
    """The k of a request: 0 means DEFAULT_TOP_K (at most the features); InvalidInput beyond F."""
    if requested < 0 or requested > n_features:
        raise InvalidInput(
            f"explain_top_k: {requested} is not between 1 and the model's {n_features} features "
            f"(0 uses {DEFAULT_TOP_K})"
        )
    return requested or min(DEFAULT_TOP_K, n_features)


def top_features(
    contributions: NDArray, k: int, feature_names: Sequence[str] | None = None
) -> Explanations:
    """The k largest contributions of each row of (N, F), largest first."""
    values = np.asarray(contributions, dtype=np.float64)
    # A stable sort, so equal contributions come out in index order whatever k is.
    features = np.argsort(-values, axis=1, kind="stable")[:, :k].astype(np.int64)
    top = np.take_along_axis(values, features, axis=1)
    names = tuple(
        tuple(feature_names[i] for i in row) if feature_names is not None else ("",) * k
        for row in features.tolist()
    )
    return Explanations(features, top, names)
