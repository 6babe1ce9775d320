"""Detection and calibration figures of benchmarks/quality.py: AUROC, AUPR, false alarms, BH."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

ALPHAS = (0.01, 0.05, 0.1)
FDR_LEVEL = 0.1


def _rank_safe(scores: NDArray[np.floating]) -> NDArray[np.float64] | None:
    """Scores with +-inf moved just past the finite range (ranks unchanged); None if any NaN."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if np.isnan(s).any():
        return None
    finite = np.isfinite(s)
    if finite.all():
        return s
    high = float(s[finite].max()) if finite.any() else 0.0
    low = float(s[finite].min()) if finite.any() else 0.0
    return np.where(s == np.inf, high + 1.0, np.where(s == -np.inf, low - 1.0, s))


def detection_metrics(y: NDArray[np.integer], scores: NDArray[np.floating]) -> dict[str, float]:
    """AUROC and AUPR (average precision) of scores where higher = more anomalous; NaN metrics
    when a score is NaN."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    s = _rank_safe(scores)
    if s is None:
        return {"auroc": float("nan"), "aupr": float("nan")}
    return {"auroc": float(roc_auc_score(y, s)), "aupr": float(average_precision_score(y, s))}


def calibration_metrics(
    y: NDArray[np.integer], p: NDArray[np.floating], n_calibration: int
) -> dict[str, Any]:
    """Observed false-alarm rate on the normals at each alpha, and BH's observed FDR at q."""
    from latentwatch.scoring.conformal import benjamini_hochberg

    p = np.asarray(p, dtype=np.float64).reshape(-1)  # (N,)
    normal = np.asarray(y) == 0
    flagged = benjamini_hochberg(p, FDR_LEVEL).is_outlier
    discoveries = int(flagged.sum())
    false_discoveries = int((flagged & normal).sum())
    n_anomalies = int((~normal).sum())
    return {
        "n_calibration": int(n_calibration),
        "min_alpha": 1.0 / (n_calibration + 1),
        "n_test_normals": int(normal.sum()),
        "false_alarm_rate": {str(a): float(np.mean(p[normal] <= a)) for a in ALPHAS},
        "bh": {
            "q": FDR_LEVEL,
            "discoveries": discoveries,
            "false_discoveries": false_discoveries,
            "fdr": false_discoveries / max(discoveries, 1),
            "power": (discoveries - false_discoveries) / max(n_anomalies, 1),
        },
    }


def finite_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
