"""Conformal calibration scores: the exported scorer run over held-out normal rows."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from latentwatch.export.sessions import run_session

logger = logging.getLogger(__name__)

# The scorer decodes K latents per row: with K = 16 on 28x28 images a chunk of 256 rows keeps
# the conv decoder's activations near 250 MB.
CHUNK_ROWS = 256
PROGRESS_EVERY_S = 5.0


def calibration_scores(
    session: ort.InferenceSession, rows: NDArray[np.float32], score_kinds: list[str]
) -> NDArray[np.float64]:
    """(n, len(score_kinds)) float64, columns in score_kinds order, scored by ONNX Runtime.

    Scored with the very graph the service runs, so calibration and serving agree exactly.
    """
    started_s = last_report_s = time.perf_counter()
    chunks = []
    for start in range(0, len(rows), CHUNK_ROWS):
        outputs = run_session(session, "input", rows[start : start + CHUNK_ROWS])
        chunks.append(np.stack([outputs[kind] for kind in score_kinds], axis=1))  # (b, S)
        if time.perf_counter() - last_report_s > PROGRESS_EVERY_S:
            last_report_s = time.perf_counter()
            done = min(start + CHUNK_ROWS, len(rows))
            logger.info("calibration: scored %d/%d rows", done, len(rows))
    scores = np.concatenate(chunks).astype(np.float64)
    logger.info(
        "calibration: scored %d rows in %.2f s", len(rows), time.perf_counter() - started_s
    )
    return scores


def min_rows_for_alpha(alpha: float) -> int:
    """Fewest calibration rows for which p = (1 + #{s_i >= s}) / (n + 1) can reach alpha."""
    return max(1, math.ceil(1.0 / alpha - 1.0 - 1e-9))


def warn_if_small(n_rows: int, alpha: float) -> None:
    """Log how coarse the p-values are; conformal p-values step in units of 1/(n + 1)."""
    needed = min_rows_for_alpha(alpha)
    if n_rows < needed:
        logger.warning(
            "calibration has %d rows: the smallest p-value is 1/%d > alpha %g, so nothing can be "
            "flagged at that alpha; it needs at least %d rows",
            n_rows, n_rows + 1, alpha, needed,
        )
    elif n_rows < 10 * needed:
        logger.info(
            "calibration has %d rows: p-values step by 1/%d, coarse for alpha %g "
            "(about %d rows make the false-alarm rate stable)",
            n_rows, n_rows + 1, alpha, 10 * needed,
        )
