"""Label-free choice of the second stage's statistics and their combination, at export.

The family's plan (latentwatch.families) fixes two statistics and combines them by the largest
standardised value; when one statistic is much better than the other on some data, the weaker
one adds false alarms. Here each candidate (each statistic alone, the plan's combination, their
sum) is scored on a task built from normal rows only: held-out normal rows (the validation
split, which neither trained the model's weights nor is a kNN reference) against synthetic
outliers made from those same rows:

- `interpolation`: points between a row and one of the farther half of the rows (off the data
  where it is not convex; near pairs would give points denser than the normal rows);
- `local_perturbation`: a few features of a row shifted by 0.5 to 2 of their standard deviations;
- `marginal_shuffle`: every feature permuted independently across rows (each feature's values
  stay typical, their joint configuration does not);
- `neighbour_extrapolation`: a row moved away from one of its nearest rows, 1 to 3 times as far.

A candidate's evidence is its AUROC per generator; the plan is kept unless another candidate's
mean AUROC over the deciding generators (DECIDING_GENERATORS) beats it by more than `margin`.
No labels are read anywhere: `choose` takes rows and a function of rows, nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from latentwatch.export.calibration import scorer_outputs
from latentwatch.export.run_inputs import ExportInputs
from latentwatch.export.second_stage_fit import MIN_FIT_ROWS
from latentwatch.export.sessions import cpu_session
from latentwatch.families import Combine
from latentwatch.repository.layout import SCORER_FILE, SECOND_STAGE_FILE
from latentwatch.repository.manifest import SecondStageSpec
from latentwatch.repository.manifest_selection import CandidateEvidence, SelectionSpec
from latentwatch.scoring.preprocessing import Preprocessing
from latentwatch.scoring.second_stage import SecondStage, combine_statistics

logger = logging.getLogger(__name__)

# Generators whose outliers are made and recorded, and those whose mean AUROC decides. Tuned
# on the selection half of the ADBench sets (benchmarks/selection_eval.py): interpolations ranked
# the candidates as the real anomalies did on Cardiotocography, landsat and InternetAds; local
# perturbations (axis-aligned shifts break the features' correlations, which the ELBO sees at
# once) ranked the ELBO first where it was worst, and shuffles are near 1.0 for every candidate.
GENERATORS = ("interpolation", "local_perturbation", "marginal_shuffle",
              "neighbour_extrapolation")
DECIDING_GENERATORS = ("interpolation",)
# Held-out normal rows the choice uses at most (as many outliers per generator): enough for an
# AUROC to about +-0.01, at a few seconds of scoring.
MAX_SELECTION_ROWS = 2000
# Another candidate replaces the plan only when its mean AUROC is this much higher.
DEFAULT_MARGIN = 0.01
NEIGHBOURS = 5  # neighbour_extrapolation moves a row away from one of its 5 nearest rows
# The choice is made on tabular rows only: shifted or shuffled pixels are not what an image
# model is asked to flag (another digit, another data set), so the plan stays for images.
IMAGE_SKIP = "image model: synthetic pixel outliers do not stand for the outliers images meet"

# (n, F) raw rows -> (n, S) standardised statistics, higher = more atypical.
StatisticsFn = Callable[[NDArray[np.float32]], NDArray[np.float64]]


@dataclass(frozen=True)
class Candidate:
    """Some of the plan's statistics and how they combine into one score."""

    statistics: tuple[str, ...]
    combine: Combine

    @property
    def name(self) -> str:
        if len(self.statistics) == 1:
            return self.statistics[0]
        return f"{self.combine}({','.join(self.statistics)})"


def candidates(statistics: Sequence[str], combine: Combine) -> tuple[Candidate, ...]:
    """The plan first (the default), then each statistic alone, then the other combination."""
    plan = Candidate(tuple(statistics), combine)
    if len(statistics) == 1:
        return (plan,)
    alone = [Candidate((s,), combine) for s in statistics]
    other: Combine = "sum" if combine != "sum" else "max"
    return (plan, *alone, Candidate(tuple(statistics), other))


def auroc(normal: NDArray[np.floating], outlier: NDArray[np.floating]) -> float:
    """P(outlier score > normal score) + half the ties (the Mann-Whitney statistic)."""
    values = np.concatenate([normal, outlier]).astype(np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each value
    outlier_ranks = mid_ranks[inverse[len(normal):]].sum()
    n_out, n_norm = len(outlier), len(normal)
    return float((outlier_ranks - n_out * (n_out + 1) / 2.0) / (n_out * n_norm))


def synthetic_outliers(
    rows: NDArray[np.float32], rng: np.random.Generator, generators: Sequence[str] = GENERATORS
) -> dict[str, NDArray[np.float32]]:
    """Outliers made from normal `rows` (n, F), as many as rows, by each named generator."""
    n, n_features = rows.shape
    data = rows.astype(np.float64)
    std = data.std(axis=0)
    made: dict[str, NDArray[np.float32]] = {}
    for name in generators:
        if name == "local_perturbation":
            out = data.copy()
            n_changed = rng.integers(1, max(1, n_features // 4) + 1, size=n)
            for i in range(n):
                features = rng.choice(n_features, n_changed[i], replace=False)
                size = rng.uniform(0.5, 2.0, n_changed[i]) * rng.choice([-1.0, 1.0], n_changed[i])
                out[i, features] += size * std[features]
        elif name == "marginal_shuffle":
            out = np.stack([rng.permutation(data[:, j]) for j in range(n_features)], axis=1)
        elif name == "interpolation":  # between each row and a far one: not inside a cluster
            d2 = _squared_distances(data / np.where(std > 0, std, 1.0))
            far = np.argsort(d2, axis=1)[:, n // 2 :]  # the farther half of the rows
            other = far[np.arange(n), rng.integers(0, far.shape[1], size=n)]
            weight = rng.uniform(0.3, 0.7, size=(n, 1))
            out = data + weight * (data[other] - data)
        elif name == "neighbour_extrapolation":  # away from a near neighbour, 1 to 3 times as far
            scaled = data / np.where(std > 0, std, 1.0)
            near = np.argsort(_squared_distances(scaled), axis=1)[:, 1 : NEIGHBOURS + 1]
            other = near[np.arange(n), rng.integers(0, near.shape[1], size=n)]
            out = data + rng.uniform(1.0, 3.0, size=(n, 1)) * (data - data[other])
        else:
            raise ValueError(f"unknown generator {name!r}; choose from {GENERATORS}")
        made[name] = out.astype(np.float32)
    return made


def _squared_distances(x: NDArray[np.float64]) -> NDArray[np.float64]:
    sq = np.einsum("ij,ij->i", x, x)
    return sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)  # (n, n)


def candidate_scores(
    z: NDArray[np.float64], statistics: Sequence[str], candidate: Candidate
) -> NDArray[np.float64]:
    """(n,) scores of `candidate` from (n, S) standardised `statistics`, as the service's second
    stage computes them."""
    columns = [list(statistics).index(s) for s in candidate.statistics]
    return combine_statistics(z[:, columns], candidate.combine)


def choose(
    standardised: StatisticsFn,
    normal_rows: NDArray[np.float32],
    statistics: Sequence[str],
    combine: Combine,
    seed: int,
    *,
    generators: Sequence[str] = GENERATORS,
    decided_by: Sequence[str] = DECIDING_GENERATORS,
    margin: float = DEFAULT_MARGIN,
    held_out: str = "",
) -> SelectionSpec:
    """Compare the candidates on held-out normal rows against synthetic outliers made from them.

    `standardised` maps raw rows to their (n, S) standardised `statistics`. Deterministic for a
    seed. No labels: the only rows are normal ones and those made from them. Every generator
    in `generators` is recorded; the mean AUROC over `decided_by` (those of them made) decides.
    """
    rng = np.random.default_rng(seed)
    if len(normal_rows) > MAX_SELECTION_ROWS:
        normal_rows = normal_rows[np.sort(rng.choice(len(normal_rows), MAX_SELECTION_ROWS,
                                                     replace=False))]
    if normal_rows.shape[1] < 2:  # one feature: a shuffle changes nothing
        generators = [g for g in generators if g != "marginal_shuffle"]
    decided_by = [g for g in decided_by if g in generators] or list(generators)
    outliers = synthetic_outliers(normal_rows, rng, generators)
    z_normal = standardised(normal_rows)
    z_outliers = {g: standardised(rows) for g, rows in outliers.items()}
    evidence = []
    for candidate in candidates(statistics, combine):
        normal = candidate_scores(z_normal, statistics, candidate)
        per_generator = {g: auroc(normal, candidate_scores(z, statistics, candidate))
                         for g, z in z_outliers.items()}
        evidence.append(CandidateEvidence(
            name=candidate.name, statistics=list(candidate.statistics), combine=candidate.combine,
            auroc=per_generator,
            mean_auroc=float(np.mean([per_generator[g] for g in decided_by])),
        ))
    plan, best = evidence[0], max(evidence, key=lambda e: e.mean_auroc)  # first of equals
    chosen = best if best.mean_auroc > plan.mean_auroc + margin else plan
    return SelectionSpec(
        chosen=chosen.name, default=plan.name, margin=margin, seed=seed,
        generators=list(generators), decided_by=list(decided_by),
        n_normal_rows=len(normal_rows),
        n_outlier_rows={g: len(rows) for g, rows in outliers.items()},
        held_out=held_out, candidates=evidence,
    )


def restrict(stage: SecondStage, candidate: Candidate) -> SecondStage:
    """The second stage over `candidate`'s statistics only: the same standardisation and
    reference rows, so the same values as fitting those statistics alone."""
    columns = [stage.statistics.index(s) for s in candidate.statistics]
    empty = np.zeros((0, 0), dtype=np.float32)
    return SecondStage(
        statistics=candidate.statistics, combine=candidate.combine, k=stage.k,
        mean=stage.mean[columns], std=stage.std[columns],
        latent_reference=(stage.latent_reference if "log_latent_knn" in candidate.statistics
                          else empty),
        input_reference=(stage.input_reference if "log_input_knn" in candidate.statistics
                         else empty),
        complexity_slope=stage.complexity_slope,
    )


def stage_statistics(
    scorer: Path, stage: SecondStage, preprocessing: Preprocessing
) -> StatisticsFn:
    """Raw rows -> the stage's standardised statistics, through the exported scorer graph."""
    session = cpu_session(scorer)

    def standardised(rows: NDArray[np.float32]) -> NDArray[np.float64]:
        outputs = scorer_outputs(session, rows, list(stage.needs_outputs), "selection")
        raw = stage.raw_statistics(outputs, preprocessing.apply(rows))
        return (raw - stage.mean) / stage.std

    return standardised


def select_second_stage(
    inputs: ExportInputs, staging: Path, stage: SecondStage, spec: SecondStageSpec,
    margin: float = DEFAULT_MARGIN,
) -> tuple[SecondStage, SecondStageSpec, SelectionSpec]:
    """Choose the fitted plan's statistics without labels; rewrite the stage when it changes."""
    seed = inputs.provenance.seed
    plan = Candidate(stage.statistics, stage.combine)  # type: ignore[arg-type]
    n_validation = 0 if inputs.validation_rows is None else len(inputs.validation_rows)
    skipped = ""
    if inputs.image_shape is not None:
        skipped = IMAGE_SKIP
    elif n_validation < MIN_FIT_ROWS or len(stage.statistics) < 2:
        skipped = (f"{n_validation} validation rows: the choice needs at least {MIN_FIT_ROWS}"
                   if len(stage.statistics) > 1 else "the plan has one statistic")
    if skipped:
        logger.info("statistics: the plan %s kept (%s)", plan.name, skipped)
        return stage, spec, SelectionSpec(
            chosen=plan.name, default=plan.name, margin=margin, seed=seed, generators=[],
            n_normal_rows=0, held_out="", skipped=skipped,
        )
    assert inputs.validation_rows is not None
    standardised = stage_statistics(staging / SCORER_FILE, stage, inputs.preprocessing)
    selection = choose(
        standardised, inputs.validation_rows, stage.statistics, plan.combine, seed, margin=margin,
        held_out=f"validation rows (held out from training and from the kNN reference), at "
                 f"most {MAX_SELECTION_ROWS}",
    )
    for c in selection.candidates:
        logger.info("statistics: %s mean AUROC %.4f on synthetic outliers %s", c.name,
                    c.mean_auroc, {g: round(a, 4) for g, a in c.auroc.items()})
    chosen = next(c for c in candidates(stage.statistics, plan.combine)
                  if c.name == selection.chosen)
    if chosen == plan:
        return stage, spec, selection
    logger.info("statistics: %s replaces the plan %s", chosen.name, plan.name)
    stage = restrict(stage, chosen)
    stage.save(staging / SECOND_STAGE_FILE)
    spec = spec.model_copy(update={"statistics": list(chosen.statistics),
                                   "combine": chosen.combine})
    return stage, spec, selection


def selection_reason(selection: SelectionSpec, plan_reason: str) -> str:
    """Why the version's second stage computes what it does, in words (default_score_reason);
    `plan_reason` says why the family's plan is what it is."""
    if selection.skipped:
        return f"{plan_reason}; {selection.default} not chosen per model: {selection.skipped}"
    chosen = selection.candidate(selection.chosen)
    default = selection.candidate(selection.default)
    assert chosen is not None and default is not None
    if chosen.name == default.name:
        return (f"the family's plan {default.name} kept without labels: no candidate beat its "
                f"mean AUROC {default.mean_auroc:.3f} on synthetic outliers by more than "
                f"{selection.margin:g} (scoring.selection)")
    return (f"chosen without labels at export: {chosen.name} separated held-out normal rows "
            f"from synthetic outliers best (mean AUROC {chosen.mean_auroc:.3f} against the "
            f"plan {default.name}'s {default.mean_auroc:.3f}; scoring.selection)")
