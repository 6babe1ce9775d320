"""The planted-bias figure shared by benchmarks/bias.py and benchmarks/bias_digits.py.

Enrichment: the rare group's share among the `fraction` (5%) of rows with the lowest density,
over its share of all rows: 1 is chance, 1 / base rate the most there is.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.density import knn_log_density

BOTTOM_FRACTION = 0.05  # "most under-represented": the 5% of rows with the lowest density
# The baselines' k as a share of the rows, on the inputs or on the means: the report's
# (KNN_FRACTION) and a larger one, that of the "knn" weights (KNN_WEIGHT_FRACTION).
BASELINE_FRACTIONS = {"0.5%": 0.005, "5%": 0.05}


def enrichment(log_density: NDArray, is_rare: NDArray[np.bool_],
               fraction: float = BOTTOM_FRACTION) -> float:
    """The rare rows' share of the sparsest `fraction` of rows over their share of all rows
    (ties broken by position, as the report's stable sort does)."""
    n_bottom = max(1, int(round(fraction * len(log_density))))
    bottom = np.argsort(log_density, kind="stable")[:n_bottom]
    return float(is_rare[bottom].mean() / is_rare.mean())


def pixel_knn_log_density(X: NDArray, fraction: float) -> NDArray[np.float64]:
    """The naive baseline: the report's k-NN density on the flattened inputs, no model."""
    flat = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
    return knn_log_density([flat], len(flat), fraction=fraction)
