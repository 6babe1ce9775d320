"""The scoring pipeline: which kinds come from the graph and which from the second stage, the
graph outputs a set of kinds reads, and the kinds and p-values computed from outputs and rows."""

from __future__ import annotations

import numpy as np
import pytest

from latentwatch.errors import InvalidInput
from latentwatch.scoring.pipeline import ScoringPipeline, resolve_kinds, resolve_score_kind
from latentwatch.scoring.preprocessing import Preprocessing
from latentwatch.scoring.second_stage import KIND as STAGE_KIND
from latentwatch.scoring.second_stage import SecondStage

F, Z, R = 4, 2, 12
PRE = Preprocessing(kind="standardize", shift=[1.0] * F, scale=[0.5] * F)
KINDS = ("neg_elbo", "recon_error", "kl", STAGE_KIND)


def stage(statistics: tuple[str, ...] = ("neg_elbo", "log_recon_error")) -> SecondStage:
    rng = np.random.default_rng(0)
    return SecondStage(
        statistics=statistics,
        combine="max",
        k=3,
        mean=np.zeros(len(statistics)),
        std=np.ones(len(statistics)),
        latent_reference=rng.normal(size=(R, Z)).astype(np.float32),
        input_reference=rng.normal(size=(R, F)).astype(np.float32),
    )


def graph_outputs(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "neg_elbo": rng.uniform(1, 5, n).astype(np.float32),
        "recon_error": rng.uniform(0.1, 2, n).astype(np.float32),
        "kl": rng.uniform(0, 1, n).astype(np.float32),
        "latent_mu": rng.normal(size=(n, Z)).astype(np.float32),
    }


def pipeline(second_stage: SecondStage | None = None) -> ScoringPipeline:
    kinds = KINDS if second_stage is not None else KINDS[:-1]
    calibration = {k: np.sort(np.random.default_rng(2).normal(size=50) + 2) for k in kinds}
    return ScoringPipeline(kinds, PRE, second_stage, calibration, kinds[0])


def test_graph_kinds_and_second_stage_kinds_are_told_apart() -> None:
    with_stage = pipeline(stage())
    assert with_stage.graph_kinds == ("neg_elbo", "recon_error", "kl")
    assert with_stage.stage_kinds == (STAGE_KIND,)
    assert with_stage.needs_stage([STAGE_KIND]) and not with_stage.needs_stage(["kl"])
    without = pipeline()
    assert without.graph_kinds == KINDS[:-1] and without.stage_kinds == ()


def test_outputs_for_kinds_add_what_the_second_stage_reads_only_when_asked() -> None:
    p = pipeline(stage(("neg_elbo", "log_recon_error", "log_latent_knn")))
    assert p.outputs_for(["kl"]) == ("kl",)
    assert p.outputs_for([STAGE_KIND, "kl"]) == ("kl", "neg_elbo", "recon_error", "latent_mu")
    assert p.graph_outputs == ("neg_elbo", "recon_error", "kl", "latent_mu")


def test_scores_are_float64_graph_outputs_and_the_second_stage_on_model_rows() -> None:
    second = stage(("neg_elbo", "log_input_knn"))
    p = pipeline(second)
    rows = np.random.default_rng(3).normal(size=(6, F)).astype(np.float32)
    outputs = graph_outputs(6)
    scores = p.scores(outputs, rows, [STAGE_KIND, "kl"])
    assert list(scores) == [STAGE_KIND, "kl"]
    assert all(v.dtype == np.float64 and v.shape == (6,) for v in scores.values())
    np.testing.assert_array_equal(scores["kl"], outputs["kl"].astype(np.float64))
    np.testing.assert_array_equal(scores[STAGE_KIND], second.score(outputs, PRE.apply(rows)))
    # Graph kinds alone never run the second stage (it would fail without its outputs here).
    assert list(p.scores({"kl": outputs["kl"]}, rows, ["kl"])) == ["kl"]


def test_p_values_use_each_kinds_calibration() -> None:
    p = pipeline(stage())
    scores = np.array([-10.0, 2.0, 1e9])
    for kind in KINDS:
        cal = p.calibration[kind]
        expected = [(1 + np.sum(cal >= s)) / (len(cal) + 1) for s in scores]
        np.testing.assert_allclose(p.p_values(kind, scores), expected, rtol=0, atol=1e-15)


def test_only_knn_statistics_make_the_second_stage_costly() -> None:
    assert not pipeline(stage()).costly([STAGE_KIND])
    knn = pipeline(stage(("neg_elbo", "log_input_knn")))
    assert knn.costly([STAGE_KIND]) and not knn.costly(["neg_elbo", "kl"])


def test_a_second_stage_needs_the_preprocessing() -> None:
    with pytest.raises(ValueError, match="preprocessing"):
        ScoringPipeline(KINDS, None, stage())


def test_score_kinds() -> None:
    available = ["neg_elbo", "iwae_nll", "kl"]
    assert resolve_kinds([], available) == ()
    assert resolve_kinds(["*"], available) == tuple(available)
    assert resolve_kinds(["kl", "neg_elbo", "kl"], available) == ("kl", "neg_elbo")
    with pytest.raises(InvalidInput, match=r"\['bogus'\].*neg_elbo.*iwae_nll.*kl"):
        resolve_kinds(["kl", "bogus"], available)


def test_the_score_kind_is_the_requested_one_or_the_default() -> None:
    p = pipeline(stage())
    assert p.resolve_score_kind(None) == p.resolve_score_kind("") == "neg_elbo"
    assert p.resolve_score_kind(STAGE_KIND) == STAGE_KIND
    assert p.resolve_kinds(["*"]) == KINDS
    with pytest.raises(InvalidInput, match=r"unknown score_kind 'nope'.*default 'neg_elbo'"):
        resolve_score_kind("nope", KINDS, "neg_elbo")
