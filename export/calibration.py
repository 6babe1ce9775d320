"""Conformal calibration scores: the exported scorer run over held-out normal rows."""

from __future__ import annotations

import logging
import time

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from latentwatch.export.sessions import run_session
from latentwatch.scoring.conformal import min_rows_for_alpha
from latentwatch.scoring.pipeline import ScoringPipeline
from latentwatch.scoring.preprocessing import Preprocessing
from latentwatch.scoring.second_stage import SecondStage

logger = logging.getLogger(__name__)

# The scorer decodes K latents per row: with K = 16 on 28x28 images a chunk of 256 rows keeps
# the conv decoder's activations near 250 MB.
CHUNK_ROWS = 256
PROGRESS_EVERY_S = 5.0


def scorer_outputs(
    session: ort.InferenceSession, rows: NDArray[np.float32], names: list[str], what: str
) -> dict[str, NDArray]:
    """The named scorer outputs over `rows`, run in chunks with progress in the log."""
    started_s = last_report_s = time.perf_counter()
    chunks: dict[str, list[NDArray]] = {name: [] for name in names}
    for start in range(0, len(rows), CHUNK_ROWS):
        outputs = run_session(session, "input", rows[start : start + CHUNK_ROWS])
        for name in names:
            chunks[name].append(outputs[name])
        if time.perf_counter() - last_report_s > PROGRESS_EVERY_S:
            last_report_s = time.perf_counter()
            done = min(start + CHUNK_ROWS, len(rows))
            logger.info("%s: scored %d/%d rows", what, done, len(rows))
    logger.info("%s: scored %d rows in %.2f s", what, len(rows), time.perf_counter() - started_s)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def calibration_scores(
    session: ort.InferenceSession,
    rows: NDArray[np.float32],
    score_kinds: list[str],
    second_stage: SecondStage | None = None,
    preprocessing: Preprocessing | None = None,
) -> NDArray[np.float64]:
    """(n, len(score_kinds)) float64, columns in score_kinds order, scored by ONNX Runtime.

    Scored with the very graph (and second stage) the service runs, so calibration and serving
    agree exactly.
    """
    pipeline = ScoringPipeline(tuple(score_kinds), preprocessing, second_stage)
    outputs = scorer_outputs(session, rows, list(pipeline.graph_outputs), "calibration")
    scores = pipeline.scores(outputs, rows, pipeline.kinds)
    return np.stack([scores[kind] for kind in score_kinds], axis=1)


def too_few_rows(n_rows: int, alpha: float) -> str:
    """Why `n_rows` calibration rows cannot flag anything at `alpha`, or "" when they can."""
    needed = min_rows_for_alpha(alpha)
    if n_rows >= needed:
        return ""
    return (
        f"calibration has {n_rows} rows: the smallest p-value is 1/{n_rows + 1} > alpha "
        f"{alpha:g}, so nothing can be flagged at that alpha; it needs at least {needed} rows"
    )


def warn_if_small(n_rows: int, alpha: float) -> None:
    """Log how coarse the p-values are; conformal p-values step in units of 1/(n + 1)."""
    needed = min_rows_for_alpha(alpha)
    if problem := too_few_rows(n_rows, alpha):
        logger.warning("%s", problem)
    elif n_rows < 10 * needed:
        logger.info(
            "calibration has %d rows: p-values step by 1/%d, coarse for alpha %g "
            "(about %d rows make the false-alarm rate stable)",
            n_rows, n_rows + 1, alpha, 10 * needed,
        )
