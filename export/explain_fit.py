"""Export's explanation statistics: per-feature NLL mean and spread over the calibration rows.

Computed with the exported graphs as the service runs them (the scorer's latent_mu through the
decoder graph, latentwatch.scoring.explain), so a normal row's contributions centre on 0.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from latentwatch.export.calibration import CHUNK_ROWS, scorer_outputs
from latentwatch.export.run_inputs import ExportInputs
from latentwatch.export.sessions import cpu_session, run_session
from latentwatch.repository.layout import DECODER_FILE, EXPLAIN_FILE, SCORER_FILE
from latentwatch.scoring.explain import ExplainStats, feature_nll, statistic_for

logger = logging.getLogger(__name__)


def fit_explain(inputs: ExportInputs, staging: Path) -> ExplainStats | None:
    """Writes explain.npz into `staging` from the calibration rows; None (and no file) when
    there are fewer than 2 rows to fit on."""
    rows = inputs.calibration_rows
    if len(rows) < 2:
        logger.warning("explanations: %d calibration rows, too few to fit; the version will "
                       "not explain rows", len(rows))
        return None
    latent = scorer_outputs(cpu_session(staging / SCORER_FILE), rows, ["latent_mu"],
                            "explanations")["latent_mu"]
    decoder = cpu_session(staging / DECODER_FILE)
    input_name = decoder.get_inputs()[0].name
    output_name = decoder.get_outputs()[0].name
    recon = np.concatenate([
        run_session(decoder, input_name, latent[start : start + CHUNK_ROWS])[output_name]
        for start in range(0, len(latent), CHUNK_ROWS)
    ])
    statistic = statistic_for(inputs.decoder)
    nll = feature_nll(inputs.preprocessing.apply(rows), recon, statistic)
    stats = ExplainStats.fit(nll, statistic)
    stats.save(staging / EXPLAIN_FILE)
    logger.info("explanations: %s over %d calibration rows, %d features", statistic, len(rows),
                stats.n_features)
    return stats
