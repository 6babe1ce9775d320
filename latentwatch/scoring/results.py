"""Score results, the one family: what the service core returns and what the client returns.

Plain frozen dataclasses of numpy arrays. Scores are float64 everywhere (graph kinds are float32
on the graph's side, which float64 holds exactly, so the values on the wire are unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import LatentwatchError
from latentwatch.scoring.explain import Explanations


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
    # The kind `score` holds (the model's default score kind unless another was asked for).
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
    # Per row, its top features, when explanations were asked for (scoring/explain.py).
    explanations: Explanations | None = None
    # True when each row's p-value is against its own group's calibration (Mondrian).
    group_conditional: bool = False

    def __len__(self) -> int:
        return int(self.score.shape[0])

    @classmethod
    def concat(cls, parts: Sequence[ScoreResult]) -> ScoreResult:
        """Rows of several results in order; `fdr` is dropped (BH does not concatenate);
        explanations are kept when every part has them."""
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        for part in parts[1:]:
            same = (part.model_name, part.model_version, part.score_kind, part.alpha,
                    part.group_conditional)
            if same != (first.model_name, first.model_version, first.score_kind, first.alpha,
                        first.group_conditional):
                raise LatentwatchError(
                    f"results differ in model, version, score kind, alpha or grouping: {same} "
                    f"vs {(first.model_name, first.model_version, first.score_kind, first.alpha)}"
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
            explanations=Explanations.concat([p.explanations for p in parts if p.explanations])
            if all(p.explanations is not None for p in parts) else None,
            group_conditional=first.group_conditional,
        )
