"""export/selection.py: the label-free choice of statistics, on constructed statistics."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from numpy.typing import NDArray

from latentwatch.export.selection import (
    DECIDING_GENERATORS,
    GENERATORS,
    Candidate,
    auroc,
    candidate_scores,
    candidates,
    choose,
    restrict,
    synthetic_outliers,
)
from latentwatch.scoring.second_stage import fit_second_stage

STATS = ("neg_elbo", "log_input_knn")


CENTRES = np.array([[-2.0] * 6, [2.0] * 6])


def _normal_rows(n: int = 600, seed: int = 0) -> NDArray[np.float32]:
    """Two tight clusters: rows between them (interpolations) are unusual."""
    rng = np.random.default_rng(seed)
    return (CENTRES[rng.integers(0, 2, size=n)] + rng.normal(size=(n, 6))).astype(np.float32)


def _good_and_noise(normal: NDArray[np.float32]):
    """Column 0: distance to the nearer cluster centre (a real detector); column 1: noise that
    does not depend on the row at all."""
    noise = np.random.default_rng(123)

    def log_distance(rows: NDArray[np.float32]) -> NDArray[np.float64]:
        return np.log(np.linalg.norm(rows[:, None, :] - CENTRES[None], axis=2).min(axis=1))

    on_normal = log_distance(normal)

    def standardised(rows: NDArray[np.float32]) -> NDArray[np.float64]:
        good = (log_distance(rows) - on_normal.mean()) / on_normal.std()
        return np.stack([good, noise.normal(size=len(rows))], axis=1)

    return standardised


def test_the_good_statistic_alone_beats_it_with_noise() -> None:
    normal = _normal_rows()
    selection = choose(_good_and_noise(normal), normal, STATS, "max", seed=0)
    assert selection.chosen == "neg_elbo"
    assert selection.default == "max(neg_elbo,log_input_knn)"
    by_name = {c.name: c for c in selection.candidates}
    assert by_name["log_input_knn"].mean_auroc == pytest.approx(0.5, abs=0.05)
    assert by_name["neg_elbo"].mean_auroc > by_name["max(neg_elbo,log_input_knn)"].mean_auroc \
        + selection.margin


def test_the_evidence_names_generators_rows_and_seed() -> None:
    normal = _normal_rows(300)
    selection = choose(_good_and_noise(normal), normal, STATS, "max", seed=7, held_out="test")
    assert selection.seed == 7
    assert selection.generators == list(GENERATORS)
    assert selection.decided_by == list(DECIDING_GENERATORS)
    assert selection.n_normal_rows == 300
    assert selection.n_outlier_rows == dict.fromkeys(GENERATORS, 300)
    assert [c.name for c in selection.candidates] == [c.name for c in candidates(STATS, "max")]
    for c in selection.candidates:
        assert set(c.auroc) == set(GENERATORS)
        assert c.mean_auroc == pytest.approx(np.mean([c.auroc[g] for g in DECIDING_GENERATORS]))
    every = choose(_good_and_noise(normal), normal, STATS, "max", seed=7, decided_by=GENERATORS)
    assert every.candidates[1].mean_auroc == pytest.approx(
        np.mean(list(every.candidates[1].auroc.values())))


def test_the_plan_is_kept_when_nothing_beats_it_by_the_margin() -> None:
    normal = _normal_rows()
    good = _good_and_noise(normal)

    def twice(rows: NDArray[np.float32]) -> NDArray[np.float64]:
        column = good(rows)[:, :1]
        return np.concatenate([column, column], axis=1)  # two equal statistics: all tie

    selection = choose(twice, normal, STATS, "max", seed=0)
    assert selection.chosen == selection.default == "max(neg_elbo,log_input_knn)"


def test_the_choice_is_deterministic_under_a_seed() -> None:
    normal = _normal_rows()
    first = choose(_good_and_noise(normal), normal, STATS, "max", seed=3)
    again = choose(_good_and_noise(normal), normal, STATS, "max", seed=3)
    other = choose(_good_and_noise(normal), normal, STATS, "max", seed=4)
    assert first == again
    assert first.candidates[0].auroc != other.candidates[0].auroc


def test_the_chooser_cannot_take_labels() -> None:
    parameters = list(inspect.signature(choose).parameters)
    assert parameters == ["standardised", "normal_rows", "statistics", "combine", "seed",
                          "generators", "decided_by", "margin", "held_out"]
    with pytest.raises(TypeError):
        choose(_good_and_noise(_normal_rows()), _normal_rows(), STATS, "max", seed=0,
               y=np.zeros(600))  # type: ignore[call-arg]


def test_auroc_matches_the_mann_whitney_count_with_ties() -> None:
    rng = np.random.default_rng(0)
    normal = rng.integers(0, 5, size=40).astype(float)
    outlier = rng.integers(2, 8, size=30).astype(float)
    pairs = (outlier[:, None] > normal[None, :]) + 0.5 * (outlier[:, None] == normal[None, :])
    assert auroc(normal, outlier) == pytest.approx(pairs.mean())
    assert auroc(normal, normal + 100) == 1.0


def test_synthetic_outliers_keep_shapes_and_the_shuffle_keeps_marginals() -> None:
    rows = _normal_rows(200)
    made = synthetic_outliers(rows, np.random.default_rng(0))
    assert set(made) == set(GENERATORS)
    for outliers in made.values():
        assert outliers.shape == rows.shape and outliers.dtype == np.float32
    np.testing.assert_array_equal(np.sort(made["marginal_shuffle"], axis=0), np.sort(rows, axis=0))
    changed = (made["local_perturbation"] != rows).sum(axis=1)
    assert changed.min() >= 1 and changed.max() <= rows.shape[1] // 4
    with pytest.raises(ValueError, match="unknown generator"):
        synthetic_outliers(rows, np.random.default_rng(0), ["rotate"])


def test_restrict_scores_as_fitting_that_statistic_alone() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(300, 4)).astype(np.float32)
    fit_rows = rng.normal(size=(100, 4)).astype(np.float32)
    queries = rng.normal(size=(50, 4)).astype(np.float32)

    def outputs(rows: NDArray[np.float32]) -> dict[str, NDArray]:
        return {"neg_elbo": (rows**2).sum(axis=1), "latent_mu": rows[:, :2]}

    both = fit_second_stage(STATS, "max", 5, outputs(reference), reference, outputs(fit_rows),
                            fit_rows)
    for name in STATS:
        alone = fit_second_stage((name,), "max", 5, outputs(reference), reference,
                                 outputs(fit_rows), fit_rows)
        restricted = restrict(both, Candidate((name,), "max"))
        np.testing.assert_allclose(restricted.score(outputs(queries), queries),
                                   alone.score(outputs(queries), queries))
    z = (both.raw_statistics(outputs(queries), queries) - both.mean) / both.std
    summed = restrict(both, Candidate(STATS, "sum"))
    np.testing.assert_allclose(candidate_scores(z, STATS, Candidate(STATS, "sum")),
                               summed.score(outputs(queries), queries))


def test_interpolations_fall_between_clusters_not_inside_them() -> None:
    rows = _normal_rows(400)
    made = synthetic_outliers(rows, np.random.default_rng(0), ["interpolation"])

    def nearest_centre(x: NDArray[np.float32]) -> NDArray[np.float64]:
        return np.linalg.norm(x[:, None, :] - CENTRES[None], axis=2).min(axis=1)

    typical = np.quantile(nearest_centre(rows), 0.95)
    assert (nearest_centre(made["interpolation"]) > typical).mean() > 0.5
