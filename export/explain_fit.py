"""Export's explanation statistics: per-feature NLL mean and spread over the calibration rows.

Computed with the exported graphs as the service runs them (the scorer's latent_mu through the
decoder graph, latentwatch.scoring.explain), so a normal row's contributions centre on 0.
Recalibration fits them again on its new rows (export/recalibrate.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from latentwatch.export.calibration import CHUNK_ROWS, scorer_outputs
from latentwatch.export.sessions import cpu_session, run_session
from latentwatch.repository.layout import DECODER_FILE, EXPLAIN_FILE, SCORER_FILE
from latentwatch.scoring.explain import ExplainStats, feature_nll, statistic_for
from latentwatch.scoring.preprocessing import Preprocessing

if TYPE_CHECKING:  # an annotation only: recalibration imports this without torch
    from latentwatch.export.run_inputs import ExportInputs

logger = logging.getLogger(__name__)


def fit_explain(inputs: ExportInputs, staging: Path) -> ExplainStats | None:
    """Writes explain.npz into `staging` from the calibration rows; None (and no file) when
    there are fewer than 2 rows to fit on."""
    return write_explain(staging, inputs.calibration_rows, inputs.preprocessing,
                         statistic_for(inputs.decoder), staging)


def write_explain(
    graphs_dir: Path,
    rows: NDArray[np.float32],
    preprocessing: Preprocessing,
    statistic: str,
    staging: Path,
) -> ExplainStats | None:
    """Fits on raw `rows` with the scorer and decoder graphs in `graphs_dir` and writes
    `staging`/explain.npz (export, and recalibration with its new rows)."""
    if len(rows) < 2:
        logger.warning("explanations: %d calibration rows, too few to fit; the version will "
                       "not explain rows", len(rows))
        return None
    latent = scorer_outputs(cpu_session(graphs_dir / SCORER_FILE), rows, ["latent_mu"],
                            "explanations")["latent_mu"]
    decoder = cpu_session(graphs_dir / DECODER_FILE)
    input_name = decoder.get_inputs()[0].name
    output_name = decoder.get_outputs()[0].name
    recon = np.concatenate([
        run_session(decoder, input_name, latent[start : start + CHUNK_ROWS])[output_name]
        for start in range(0, len(latent), CHUNK_ROWS)
    ])
    nll = feature_nll(preprocessing.apply(rows), recon, statistic)
    stats = ExplainStats.fit(nll, statistic)
    stats.save(staging / EXPLAIN_FILE)
    logger.info("explanations: %s over %d calibration rows, %d features", statistic, len(rows),
                stats.n_features)
    return stats
