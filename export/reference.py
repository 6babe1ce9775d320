"""The latent reference of a version: the run's training rows encoded by the exported graph."""

from __future__ import annotations

import logging
from pathlib import Path

from latentwatch.bias.drift import LatentReference
from latentwatch.export.calibration import scorer_outputs
from latentwatch.export.run_inputs import ExportInputs
from latentwatch.export.sessions import cpu_session
from latentwatch.repository.layout import ENCODER_FILE, REFERENCE_FILE, SCORER_FILE
from latentwatch.repository.manifest import ReferenceSpec

logger = logging.getLogger(__name__)


def write_reference(inputs: ExportInputs, staging: Path) -> ReferenceSpec:
    """Encodes the run's training rows with the exported encoder (as the service will) and
    writes their latent reference for bias reports: histograms, deciles and moments."""
    assert inputs.train_rows is not None
    graph = ENCODER_FILE if (staging / ENCODER_FILE).is_file() else SCORER_FILE
    session = cpu_session(staging / graph)
    names = [o.name for o in session.get_outputs()]
    wanted = [n for n in ("latent_mu", "latent_logvar") if n in names]
    outputs = scorer_outputs(session, inputs.train_rows, wanted, "latent reference")
    reference = LatentReference.from_latents(outputs["latent_mu"], outputs.get("latent_logvar"))
    reference.save(staging / REFERENCE_FILE)
    logger.info("latent reference: %d training rows, %d of %d latent dimensions active",
                reference.n_rows, int(reference.active.sum()), reference.latent_dim)
    return ReferenceSpec(
        file=REFERENCE_FILE, n_rows=reference.n_rows,
        fit_split=f"{reference.n_rows} training rows, encoded by {graph}",
    )
