"""What the client returns: plain frozen dataclasses of numpy arrays and strings.

Also the Benjamini-Hochberg procedure, which the client applies when rows span several requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput, LatentwatchError


@dataclass(frozen=True, eq=False)
class FdrResult:
    """Benjamini-Hochberg decision over a set of p-values at false discovery rate `level`."""

    level: float
    is_outlier: NDArray[np.bool_]  # (N,)
    n_flagged: int
    # Largest p-value flagged; 0 when nothing is flagged.
    p_value_threshold: float


@dataclass(frozen=True, eq=False)
class ScoreResult:
    """Per-row results, in input order. Higher score = more anomalous."""

    model_name: str
    model_version: str
    # The kind `score` holds (the model's default score kind).
    score_kind: str
    # The false-alarm rate `is_outlier` used.
    alpha: float
    score: NDArray[np.float64]  # (N,)
    p_value: NDArray[np.float64]  # (N,)
    outlier_probability: NDArray[np.float64]  # (N,)
    is_outlier: NDArray[np.bool_]  # (N,)
    # Extra score kinds asked for, each (N,).
    scores: dict[str, NDArray[np.float64]]
    # Present when an FDR level was asked for.
    fdr: FdrResult | None = None

    def __len__(self) -> int:
        return int(self.score.shape[0])

    @classmethod
    def concat(cls, parts: Sequence[ScoreResult]) -> ScoreResult:
        """Rows of several results in order; `fdr` is dropped (BH does not concatenate)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        for part in parts[1:]:
            same = (part.model_name, part.model_version, part.score_kind, part.alpha)
            if same != (first.model_name, first.model_version, first.score_kind, first.alpha):
                raise LatentwatchError(
                    f"results differ in model, version, score kind or alpha: {same} vs "
                    f"{(first.model_name, first.model_version, first.score_kind, first.alpha)}"
                )
        return cls(
            model_name=first.model_name,
            model_version=first.model_version,
            score_kind=first.score_kind,
            alpha=first.alpha,
            score=np.concatenate([p.score for p in parts]),
            p_value=np.concatenate([p.p_value for p in parts]),
            outlier_probability=np.concatenate([p.outlier_probability for p in parts]),
            is_outlier=np.concatenate([p.is_outlier for p in parts]),
            scores={k: np.concatenate([p.scores[k] for p in parts]) for k in first.scores},
        )


def benjamini_hochberg(p_values: NDArray[np.floating], level: float) -> FdrResult:
    """Flags the rows Benjamini-Hochberg rejects at false discovery rate `level`.

    With m p-values sorted ascending, k is the largest rank with p_(k) <= level * k / m; every
    row with p <= p_(k) is flagged.
    """
    if not 0.0 < level < 1.0:
        raise InvalidInput(f"fdr level must be in (0, 1), got {level}")
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)  # (N,)
    m = p.shape[0]
    ordered = np.sort(p)
    passing = np.flatnonzero(ordered <= level * np.arange(1, m + 1) / m)
    if passing.size == 0:
        return FdrResult(level, np.zeros(m, dtype=bool), 0, 0.0)
    threshold = float(ordered[passing[-1]])
    is_outlier = p <= threshold
    return FdrResult(level, is_outlier, int(is_outlier.sum()), threshold)
