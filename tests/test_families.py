"""The model family registry: every kind resolves, and what it claims (graphs, capabilities,
score kinds, latent outputs) is what the exported graphs give and a manifest accepts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentwatch.export.graphs import GraphDef, build_graphs
from latentwatch.export.onnx_file import export_onnx
from latentwatch.export.second_stage_fit import second_stage_plan
from latentwatch.export.sessions import cpu_session
from latentwatch.families import (
    CAPABILITIES,
    FAMILIES,
    KINDS,
    UnknownModelKind,
    family,
    kinds_where,
    resolve,
)
from latentwatch.models import LossTerms, ModelConfig, build_model, model_loss
from latentwatch.repository.manifest import GraphSpec, Manifest, TensorSpec
from latentwatch.scoring.preprocessing import Preprocessing

F, Z = 6, 2
# Kinds with an encoder, a decoder and a scorer; the adversarial ones (gan, cgan, pix2pix) are
# tested in tests/models/test_gan.py.
LATENT_KINDS = kinds_where(adversarial=False)


def _graphs(kind: str) -> list[GraphDef]:
    model = build_model(ModelConfig(kind=kind, n_features=F, hidden=(8,), latent_dim=Z,
                                    beta=family(kind).default_beta, n_importance_samples=3))
    pre = Preprocessing(kind="standardize", shift=[0.0] * F, scale=[1.0] * F)
    return build_graphs(model, model_kind=kind, n_features=F, latent_dim=Z,
                        n_importance_samples=3, preprocessing=pre, seed=0)


@pytest.mark.parametrize("kind", LATENT_KINDS)
def test_every_kind_resolves_to_its_parts(kind: str) -> None:
    fam = family(kind)
    assert fam.kind == kind and fam.description
    assert set(fam.capabilities) <= set(CAPABILITIES)
    config_class = resolve(fam.config_class)
    assert config_class is ModelConfig
    model = build_model(ModelConfig(kind=kind, n_features=F, hidden=(4,), latent_dim=Z,
                                    beta=fam.default_beta))
    assert isinstance(model, resolve(fam.model_class))
    terms = model_loss(model, torch.rand(5, F), torch.Generator().manual_seed(0))
    assert isinstance(terms, LossTerms) and torch.isfinite(terms.total)
    assert (float(terms.kl.detach()) == 0.0) == (not fam.variational)
    assert resolve(fam.graph_builder) is build_graphs
    assert fam.resamples == (fam.resampling is not None)


@pytest.mark.parametrize("kind", LATENT_KINDS)
def test_the_exported_graphs_give_what_the_family_says(kind: str, tmp_path: Path) -> None:
    fam = family(kind)
    graphs = _graphs(kind)
    assert tuple(g.name for g in graphs) == fam.graphs
    by_name = {g.name: g for g in graphs}
    assert list(by_name["scorer"].outputs) == ["score", *fam.score_kinds, *fam.latent_outputs]
    assert list(by_name["encoder"].outputs) == list(fam.latent_outputs)
    export_onnx(by_name["scorer"], tmp_path / "scorer.onnx")
    session = cpu_session(tmp_path / "scorer.onnx")
    assert [o.name for o in session.get_outputs()] == list(by_name["scorer"].outputs)
    # A manifest with these graphs accepts exactly the family's capabilities.
    specs = {
        g.name: GraphSpec(
            file=g.file, inputs=[TensorSpec(name=g.input_name, shape=[-1, g.input_width])],
            outputs=[TensorSpec(name=n, shape=[-1, *s]) for n, s in g.outputs.items()],
        )
        for g in graphs
    }
    kinds = list(fam.score_kinds)
    manifest = Manifest.model_validate(_manifest_dict(kind, specs, kinds))
    assert manifest.capabilities == list(fam.capabilities)


def _manifest_dict(kind: str, graphs: dict[str, GraphSpec], kinds: list[str]) -> dict:
    return {
        "name": "m", "version": "1", "model_kind": kind,
        "capabilities": list(family(kind).capabilities),
        "input": {"shape": [F], "preprocessing": {"kind": "scale", "shift": [0.0] * F,
                                                  "scale": [1.0] * F}},
        "graphs": {k: g.model_dump() for k, g in graphs.items()},
        "latent": {"latent_dim": Z},
        "scoring": {"score_kinds": kinds, "default_score_kind": kinds[0],
                    "calibration": {"size": 3, "score_kinds": kinds, "split": "tests"}},
        "parity": {"batch_sizes": [1], "rtol": 0.0, "atol": 0.0, "max_abs_error": {}},
        "onnx": {"opset": 17, "ir_version": 9, "producer": "tests"},
        "provenance": {"data": "x", "n_train": 1, "n_validation": 0, "seed": 0, "epochs": 1,
                       "final_losses": {}, "trained_at": "t", "latentwatch_version": "0",
                       "torch_version": "0"},
        "sha256": {}, "created_at": "t",
    }


def test_unknown_kinds_name_the_known_ones() -> None:
    with pytest.raises(UnknownModelKind, match=r"unknown model kind 'flow'.*\['ae', 'vae'"):
        family("flow")
    with pytest.raises(ValueError, match="kind must be one of"):
        ModelConfig(kind="flow", n_features=F)
    assert isinstance(UnknownModelKind("x"), ValueError)


def test_queries_and_the_cli_choices_come_from_the_registry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from latentwatch.cli.main import build_parser

    assert KINDS == tuple(FAMILIES) == ("ae", "vae", "beta-vae", "dbvae", "gan", "cgan",
                                        "pix2pix")
    assert kinds_where(variational=True) == ("vae", "beta-vae", "dbvae")
    assert kinds_where(adversarial=True) == ("gan", "cgan", "pix2pix")
    assert kinds_where(conditional=True) == ("cgan",)
    assert kinds_where(resampling="latent-density") == ("dbvae",)
    assert family("vae").fixed_beta == 1.0 and family("beta-vae").default_beta == 2.0
    assert not family("ae").draws_importance_samples
    parser = build_parser()
    train = ["train", "--data", "x", "--out", "r", "--model"]
    for kind in KINDS:
        assert parser.parse_args([*train, kind]).model == kind
    with pytest.raises(SystemExit):
        parser.parse_args([*train, "flow"])
    assert ("choose from ae, vae, beta-vae, dbvae, gan, cgan, pix2pix"
            in capsys.readouterr().err.replace("'", ""))


@pytest.mark.parametrize("kind", kinds_where(adversarial=True))
def test_adversarial_kinds_generate_and_are_refused_where_a_scorer_is_needed(kind: str) -> None:
    from latentwatch.models.training import TrainConfig

    fam = family(kind)
    assert not fam.scores and fam.score_kinds == () and fam.second_stage is None
    assert set(fam.capabilities) <= {"generate", "translate"} and len(fam.graphs) == 1
    assert resolve(fam.config_class).__name__.endswith("Config")
    assert callable(resolve(fam.loss)) and callable(resolve(fam.model_class))
    assert fam.graph_builder.startswith("latentwatch.export.")
    with pytest.raises(ValueError, match=f"model kind '{kind}' is adversarial.*ModelConfig "
                                         "takes 'ae' or 'vae'"):
        ModelConfig(kind=kind, n_features=F)
    with pytest.raises(ValueError, match="train it with .*GANTrainConfig"):
        TrainConfig(data="digits", model=kind, out=Path("run"))
    assert all(family(k).scores for k in LATENT_KINDS)


def test_second_stage_plans_by_family_and_data() -> None:
    assert second_stage_plan("ae", True) == second_stage_plan("ae", False) == (
        ("log_recon_error", "log_input_knn"), "max")
    for kind in kinds_where(variational=True):
        assert second_stage_plan(kind, True) == (("neg_elbo", "log_recon_error"), "max")
        assert second_stage_plan(kind, False) == (("neg_elbo", "log_input_knn"), "max")


def test_the_registry_imports_no_torch() -> None:
    code = ("import sys, latentwatch.families, latentwatch.repository.manifest; "
            "sys.exit(int('torch' in sys.modules or 'onnx' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
