"""Bias-report options, their defaults and their one validation (run by the service).

The CLI and the client send what the user gave; the server fills in these defaults, runs
`BiasOptions.validated` and answers INVALID_ARGUMENT with its message.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latentwatch.errors import InvalidInput, quote

# How the resampling weights come from the latent means (latentwatch.bias.density):
# "max": per-dimension histograms, the sparsest dimension decides (the MIT 6.S191 lab's rule);
# "paper": the product of the inverse histogram densities (Amini et al., AIES 2019);
# "knn": the k-nearest-neighbour density of the joint means, tempered (KNN_WEIGHT_POWER), which
# sees a rare group in the middle of every marginal (benchmarks/bias.py, DB-VAE).
MODES = ("paper", "max", "knn")
# "max" by default: with many latent dimensions the paper's product puts nearly all the weight on
# a handful of rows (benchmarks/bias.py: effective sample size 1 of 54,120 rows at 16 latent
# dimensions, against 2,312 for "max"), which is no use for resampling.
DEFAULT_MODE = "max"
# What ranks the rows of a bias report (the sparse set, the sparsest and densest rows, each row's
# log_density); the weights come from `mode`.
# "knn": the k-nearest-neighbour density of the joint latent means (latentwatch.bias.density,
# KNN_FRACTION).
# "histogram": the DB-VAE paper's product of per-dimension histograms, which misses a rare group
# whose means sit in the middle of every marginal. Measured by benchmarks/bias_digits.py (see
# KNN_FRACTION in latentwatch.bias.density and the README's bias section).
DENSITIES = ("knn", "histogram")
DEFAULT_DENSITY = "knn"
DEFAULT_BINS = 10
DEFAULT_ALPHA = 1e-3
DEFAULT_TOP_K = 20
DEFAULT_SPARSE_FRACTION = 0.1
DEFAULT_N_DECODED = 8  # sparsest and densest rows decoded when the request leaves it unset
# Groups are flagged only when Benjamini-Hochberg over all groups of the report rejects them at
# this level (and their ratio is outside latentwatch.bias.groups.DISPARITY_BAND); the ratio
# intervals have confidence 1 - this level.
DEFAULT_SIGNIFICANCE_LEVEL = 0.05

MAX_BINS = 1000
MAX_TOP_K = 10_000


@dataclass(frozen=True)
class BiasOptions:
    bins: int = DEFAULT_BINS
    alpha: float = DEFAULT_ALPHA
    mode: str = DEFAULT_MODE
    top_k: int = DEFAULT_TOP_K
    sparse_fraction: float = DEFAULT_SPARSE_FRACTION
    # Sparsest and densest rows to decode at their latent means; None: decoded_rows' default.
    n_decoded: int | None = None
    significance_level: float = DEFAULT_SIGNIFICANCE_LEVEL
    density: str = DEFAULT_DENSITY  # what ranks the rows; see DENSITIES

    @property
    def decoded_rows(self) -> int:
        """Rows to decode per region: n_decoded, or DEFAULT_N_DECODED capped at top_k."""
        return min(DEFAULT_N_DECODED, self.top_k) if self.n_decoded is None else self.n_decoded

    def validated(self) -> BiasOptions:
        if not 2 <= self.bins <= MAX_BINS:
            raise InvalidInput(f"bins: expected 2 to {MAX_BINS} histogram bins, got {self.bins}")
        if not (np.isfinite(self.alpha) and self.alpha >= 0):
            raise InvalidInput(f"alpha: expected a finite smoothing >= 0, got {self.alpha}")
        if self.mode not in MODES:
            raise InvalidInput(f"mode: expected one of {', '.join(MODES)}, got {quote(self.mode)}")
        if self.density not in DENSITIES:
            raise InvalidInput(
                f"density: expected one of {', '.join(DENSITIES)}, got {quote(self.density)}"
            )
        if not 0 <= self.top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k: expected 0 to {MAX_TOP_K} rows, got {self.top_k}")
        if not 0 < self.sparse_fraction <= 0.5:
            raise InvalidInput(
                f"sparse_fraction: expected a share in (0, 0.5], got {self.sparse_fraction}"
            )
        if not 0 < self.significance_level < 1:
            raise InvalidInput(
                f"significance_level: expected a level in (0, 1), got {self.significance_level}"
            )
        if self.n_decoded is not None and not 0 <= self.n_decoded <= self.top_k:
            raise InvalidInput(
                f"n_decoded: expected 0 to top_k ({self.top_k}) rows, got {self.n_decoded}"
            )
        return self
