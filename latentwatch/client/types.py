"""What the client returns: the one score result family (latentwatch.scoring.results) and the
one Benjamini-Hochberg procedure (latentwatch.scoring.conformal), which the client applies when
rows span several requests. The service core returns the very same types.
"""

from __future__ import annotations

from latentwatch.scoring.conformal import benjamini_hochberg
from latentwatch.scoring.results import FdrResult, ScoreResult

__all__ = ["FdrResult", "ScoreResult", "benjamini_hochberg"]
