"""Export's second stage: which statistics it combines (by family and data), fitted on the run's
training and validation rows with the scorer graph just exported, and the default score kind."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from latentwatch.export.calibration import scorer_outputs
from latentwatch.export.errors import ExportError
from latentwatch.export.run_inputs import ExportInputs
from latentwatch.export.sessions import cpu_session
from latentwatch.families import Combine, family
from latentwatch.repository.layout import SCORER_FILE, SECOND_STAGE_FILE
from latentwatch.repository.manifest import SecondStageSpec
from latentwatch.scoring.second_stage import KIND as SECOND_STAGE_KIND
from latentwatch.scoring.second_stage import (
    MAX_REFERENCE_ROWS,
    SecondStage,
    fit_second_stage,
    needed_outputs,
    reference_rows_for,
)

logger = logging.getLogger(__name__)

# The second stage standardises its statistics on validation rows when there are this many;
# below that, on the training rows with leave-one-out kNN distances.
MIN_FIT_ROWS = 50
SECOND_STAGE_K = 5


def second_stage_plan(model_kind: str, is_image: bool) -> tuple[tuple[str, ...], Combine]:
    """The statistics the second stage combines and how, by model family and data (measured
    with benchmarks/quality.py; the plans live in latentwatch.families).

    Tabular rows: the ELBO and the distance to the nearest training rows. Images: the ELBO and
    the reconstruction error; a Fashion-MNIST model gives MNIST digits a LOWER negative ELBO
    than its own data but a higher reconstruction error. (Two-sided combinations and kNN
    distances over raw pixels measured worse on Fashion-MNIST/MNIST, and pixel kNN is costly.)
    The AE has no ELBO: its reconstruction error and the input kNN distance.
    """
    plan = family(model_kind).second_stage
    if plan is None:
        raise ExportError(f"model kind {model_kind!r} has no second stage")
    return plan.statistics(is_image), plan.combine


def default_kind(kinds: list[str]) -> tuple[str, str]:
    """The default score kind of an export and why, in words."""
    if SECOND_STAGE_KIND in kinds:
        return SECOND_STAGE_KIND, (
            "fixed by benchmarks/quality.py: the second stage ranked anomalies best on the "
            "ADBench tabular sets and Fashion-MNIST/MNIST (see README, Score kinds)"
        )
    return kinds[0], f"{kinds[0]}: the run kept no training rows for the second stage"


def fit_export_second_stage(
    inputs: ExportInputs, staging: Path
) -> tuple[SecondStage, SecondStageSpec]:
    """Fits the second stage on the run's training rows (reference) and validation rows (fit),
    with the scorer graph just exported, and writes its arrays into `staging`."""
    assert inputs.train_rows is not None
    statistics, combine = second_stage_plan(inputs.model_kind, inputs.image_shape is not None)
    rng = np.random.default_rng(inputs.provenance.seed)
    reference = inputs.train_rows
    n_reference = inputs.n_reference_rows or reference_rows_for(inputs.n_features)
    if len(reference) > n_reference:
        reference = reference[np.sort(rng.choice(len(reference), n_reference, False))]
    if len(reference) <= SECOND_STAGE_K + 1:
        raise ExportError(
            f"the second stage needs more than {SECOND_STAGE_K + 1} training rows, got "
            f"{len(reference)}"
        )
    session = cpu_session(staging / SCORER_FILE)
    needed = list(needed_outputs(statistics))
    reference_outputs = scorer_outputs(session, reference, needed, "second stage reference")
    fit = inputs.validation_rows
    if fit is not None and len(fit) >= MIN_FIT_ROWS:
        if len(fit) > MAX_REFERENCE_ROWS:
            fit = fit[np.sort(rng.choice(len(fit), MAX_REFERENCE_ROWS, False))]
        fit_outputs = scorer_outputs(session, fit, needed, "second stage fit")
        fit_rows = inputs.preprocessing.apply(fit)
        fit_split = f"{len(fit)} validation rows (held out from training, not calibration)"
    else:
        fit_outputs, fit_rows = None, None
        fit_split = (
            f"{len(reference)} training rows, kNN distances leave-one-out (fewer than "
            f"{MIN_FIT_ROWS} validation rows)"
        )
    stage = fit_second_stage(
        statistics, combine, SECOND_STAGE_K, reference_outputs,
        inputs.preprocessing.apply(reference), fit_outputs, fit_rows,
    )
    stage.save(staging / SECOND_STAGE_FILE)
    spec = SecondStageSpec(
        kind=SECOND_STAGE_KIND, file=SECOND_STAGE_FILE, statistics=list(statistics),
        combine=combine, k=SECOND_STAGE_K, n_reference_rows=len(reference),
        fit_split=fit_split,
    )
    logger.info("second stage: %s over %s, fitted on %s", spec.combine,
                ", ".join(statistics), fit_split)
    return stage, spec
