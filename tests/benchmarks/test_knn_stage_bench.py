"""benchmarks/knn_stage.py: the exact index against the float32 search it replaced (its
baseline), on distances and on second-stage scores, within the float32 rounding bound."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from latentwatch.scoring.knn import KnnIndex
from latentwatch.scoring.second_stage import fit_second_stage

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("knn_stage")


def rows(seed: int, n: int, dim: int) -> np.ndarray:
    """Standardised rows with heavy tails, as tabular model rows are."""
    rng = np.random.default_rng(seed)
    return (rng.standard_t(3, size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("dim", [9, 36, 166])
def test_distances_match_the_replaced_search_within_its_float32_rounding(
    bench: ModuleType, dim: int
) -> None:
    """The replaced search's squared distances err by at most
    tau = 2 (D + 4) eps32 (|x|^2 + max |y|^2) (float32 products of D terms); k-th smallest
    values move by no more than the values, so each mean distance is within sqrt(tau)."""
    reference = rows(0, 3000, dim)
    queries = np.concatenate([rows(1, 400, dim), 20.0 * rows(2, 20, dim)])
    new = KnnIndex.build(reference).mean_distance(queries, 5)
    old = bench.legacy_knn_distance(reference, queries, 5)
    q_sq = (queries.astype(np.float64) ** 2).sum(axis=1)
    tau = 2 * (dim + 4) * EPS32 * (q_sq + (reference.astype(np.float64) ** 2).sum(axis=1).max())
    assert (np.abs(new - old) <= np.sqrt(tau)).all()
    assert np.abs(new - old).max() > 0  # the old search did round: the two are not one code


def test_second_stage_scores_match_the_replaced_search(bench: ModuleType) -> None:
    """A fitted stage (neg_elbo, log_input_knn; max) scores the same rows with the index and,
    swapped in, with the replaced search: the same ranking up to rounding, scores within 1e-3
    (their log-distance term moves by at most sqrt(tau) / distance, over the fitted std)."""
    rng = np.random.default_rng(3)
    reference, fit, test = rows(4, 4096, 9), rows(5, 500, 9), rows(6, 600, 9)
    outputs = {name: {"neg_elbo": rng.normal(size=len(x))}
               for name, x in (("ref", reference), ("fit", fit), ("test", test))}
    stage = fit_second_stage(("neg_elbo", "log_input_knn"), "max", 5, outputs["ref"],
                             reference, outputs["fit"], fit)
    new = stage.score(outputs["test"], test)
    index = bench.use_legacy_search(stage)
    assert isinstance(index, KnnIndex)
    old = stage.score(outputs["test"], test)
    assert np.abs(new - old).max() <= 1e-3
    assert np.corrcoef(np.argsort(np.argsort(new)), np.argsort(np.argsort(old)))[0, 1] > 0.9999
