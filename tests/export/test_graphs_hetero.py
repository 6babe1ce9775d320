"""The scorer's recon_prob_nll (An & Cho's reconstruction probability) and the export of
heteroscedastic Gaussian VAEs: the maths against direct computations, Jensen, parity."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from latentwatch.export.exporter import export_run
from latentwatch.export.graphs import GraphDef, build_graphs, fixed_noise, run_torch
from latentwatch.export.sessions import cpu_session, run_session
from latentwatch.models import ModelConfig, build_model, load_checkpoint
from latentwatch.models.training import TrainConfig, train
from latentwatch.repository.manifest import Manifest, Preprocessing

F, Z, K = 12, 3, 16
SCORER_OUTPUTS = ["score", "neg_elbo", "iwae_nll", "recon_error", "kl", "recon_prob_nll",
                  "latent_mu", "latent_logvar"]


def _identity(n_features: int) -> Preprocessing:
    return Preprocessing(kind="standardize", shift=[0.0] * n_features, scale=[1.0] * n_features)


def _scorer(decoder: str, seed: int = 0) -> tuple[torch.nn.Module, GraphDef]:
    """A randomly initialised VAE (moved off its init) and its scorer graph."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(kind="vae", n_features=F, hidden=(16,), latent_dim=Z,
                                    decoder=decoder, n_importance_samples=K))  # type: ignore[arg-type]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    graphs = build_graphs(model, model_kind="vae", n_features=F, latent_dim=Z,
                          n_importance_samples=K, preprocessing=_identity(F), seed=seed)
    return model, next(g for g in graphs if g.name == "scorer")


def _direct_log_px(model: torch.nn.Module, x: torch.Tensor, seed: int) -> np.ndarray:
    """log p(x | z_k) at the scorer's fixed draws, float64: (K, B)."""
    model = model.double()
    x = x.double()
    with torch.no_grad():
        mu, logvar = model.encode(x)
        z = mu + torch.exp(0.5 * logvar) * fixed_noise(K, Z, seed).double()  # (K, B, Z)
        log_px = model.log_px(x, model.decode(z)).numpy()
    model.float()
    return log_px


def _numpy_logmeanexp(values: np.ndarray) -> np.ndarray:
    """log mean_k exp(values_k) over axis 0 in float64, shifted by the max."""
    peak = values.max(axis=0)
    return np.log(np.mean(np.exp(values - peak), axis=0)) + peak


@pytest.mark.parametrize("decoder", ["bernoulli", "gaussian", "gaussian-hetero"])
def test_scorer_outputs_in_order_and_recon_prob_nll_is_a_logmeanexp(decoder: str) -> None:
    model, scorer = _scorer(decoder)
    assert list(scorer.outputs) == SCORER_OUTPUTS
    x = torch.rand(20, F) if decoder == "bernoulli" else torch.randn(20, F)
    out = run_torch(scorer, x)
    assert list(out) == SCORER_OUTPUTS and out["recon_prob_nll"].shape == (20,)
    log_px = _direct_log_px(model, x, seed=0)  # (K, B)
    expected = -_numpy_logmeanexp(log_px)
    np.testing.assert_allclose(out["recon_prob_nll"].numpy(), expected, rtol=1e-5, atol=1e-4)
    # The same with torch's own logsumexp: the hand-written max shift changes nothing.
    via_torch = -(torch.logsumexp(torch.from_numpy(log_px), dim=0) - math.log(K)).numpy()
    np.testing.assert_allclose(expected, via_torch, rtol=1e-12)
    # Jensen: log mean exp >= mean, so recon_prob_nll <= -mean_k log p(x|z_k) = neg_elbo - kl,
    # and strictly below it wherever the K draws decode differently.
    mean_nll = -log_px.mean(axis=0)
    slack = 1e-5 * np.maximum(1.0, np.abs(mean_nll))
    assert (out["recon_prob_nll"].numpy() <= mean_nll + slack).all()
    assert (out["recon_prob_nll"].numpy() < mean_nll - 1e-4).any()
    gap = (out["neg_elbo"] - out["kl"]).numpy()
    np.testing.assert_allclose(gap, mean_nll, rtol=1e-4, atol=1e-3)


def test_recon_prob_nll_stays_finite_where_every_density_underflows() -> None:
    """Rows far from the data have log p(x|z_k) of about -1e6: exp of that is 0 in any float,
    so only the max-shifted form gives a finite, correct score."""
    model, scorer = _scorer("gaussian-hetero", seed=1)
    x = 1e3 * torch.randn(8, F)
    out = run_torch(scorer, x)["recon_prob_nll"].numpy()
    log_px = _direct_log_px(model, x, seed=1)
    assert log_px.max() < -1e4 and np.isfinite(out).all()
    np.testing.assert_allclose(out, -_numpy_logmeanexp(log_px), rtol=1e-5)


# ---- trained and exported heteroscedastic models ------------------------------------------------


@dataclass(frozen=True)
class _Run:
    run_dir: Path
    version_dir: Path


def _rows(n: int) -> np.ndarray:
    """Rows on a noisy 2-D curve in 6-D, with offsets and scales like real tables."""
    rng = np.random.default_rng(0)
    t = rng.normal(size=(n, 2))
    mixing = np.random.default_rng(99).normal(size=(2, 6))
    rows = np.tanh(t @ mixing) + 0.05 * (1 + np.abs(t[:, :1])) * rng.normal(size=(n, 6))
    return (4.0 * rows + 7.0).astype(np.float32)


@pytest.fixture(scope="module")
def hetero_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, _Run]:
    """A tabular MLP VAE and a digits conv VAE, both with the heteroscedastic decoder."""
    root = tmp_path_factory.mktemp("hetero")
    np.save(root / "rows.npy", _rows(400))
    configs = {
        "mlp": TrainConfig(data=str(root / "rows.npy"), model="vae", out=root / "mlp",
                           decoder="gaussian-hetero", hidden=(32, 16), epochs=5,
                           progress=False),
        "conv": TrainConfig(data="digits", model="vae", out=root / "conv",
                            decoder="gaussian-hetero", epochs=2, progress=False),
    }
    repo = root / "repo"
    return {
        body: _Run(run_dir, export_run(run_dir, repo, f"hetero-{body}"))
        for body, run_dir in ((body, train(config)) for body, config in configs.items())
    }


@pytest.mark.parametrize("body", ["mlp", "conv"])
def test_hetero_export_declares_its_decoder_and_scores(
    hetero_runs: dict[str, _Run], body: str
) -> None:
    manifest = Manifest.read(hetero_runs[body].version_dir)
    assert manifest.latent.decoder == "gaussian-hetero"
    assert "recon_prob_nll" in manifest.scoring.score_kinds
    assert [t.name for t in manifest.graphs["scorer"].outputs] == SCORER_OUTPUTS
    n_features = manifest.input.shape[0]
    # The decoder graph gives the mean only: F values per row, not [mean, log-variance].
    assert manifest.graphs["decoder"].outputs[0].shape[1:] == [n_features]


@pytest.mark.parametrize("graph", ["scorer", "encoder", "decoder"])
@pytest.mark.parametrize("body", ["mlp", "conv"])
def test_hetero_onnx_runtime_matches_torch(
    hetero_runs: dict[str, _Run], body: str, graph: str
) -> None:
    run = hetero_runs[body]
    model, checkpoint = load_checkpoint(run.run_dir / "checkpoint.pt")
    config = checkpoint.config
    graphs = {
        g.name: g
        for g in build_graphs(
            model, model_kind=config.kind, n_features=config.n_features,
            latent_dim=config.latent_dim, n_importance_samples=config.n_importance_samples,
            preprocessing=Preprocessing(**checkpoint.preprocessing),
            seed=checkpoint.provenance["seed"],
        )
    }
    reference = graphs[graph]
    rows = np.load(run.run_dir / "calibration_rows.npy", allow_pickle=False)[:64]
    if graph == "decoder":
        rows = run_torch(graphs["encoder"], torch.from_numpy(rows))["latent_mu"].numpy()
    manifest = Manifest.read(run.version_dir)
    session = cpu_session(run.version_dir / f"{graph}.onnx")
    for batch in (1, 64):
        expected = run_torch(reference, torch.from_numpy(rows[:batch]))
        actual = run_session(session, reference.input_name, rows[:batch])
        assert list(actual) == list(expected)
        for name, value in expected.items():
            want = value.numpy()
            assert actual[name].shape == want.shape
            allowed = manifest.parity.atol + manifest.parity.rtol * np.abs(want).max()
            assert np.abs(actual[name] - want).max() <= allowed, f"{graph}.{name} batch {batch}"


@pytest.mark.parametrize("body", ["mlp", "conv"])
def test_hetero_scores_follow_their_definitions(hetero_runs: dict[str, _Run], body: str) -> None:
    """ONNX Runtime's recon_prob_nll against a float64 logmeanexp of the model's likelihood,
    and recon_error against the mean half only."""
    run = hetero_runs[body]
    manifest = Manifest.read(run.version_dir)
    model, checkpoint = load_checkpoint(run.run_dir / "checkpoint.pt")
    rows = np.load(run.run_dir / "calibration_rows.npy", allow_pickle=False)[:48]
    x = torch.from_numpy(Preprocessing(**checkpoint.preprocessing).apply(rows)).double()
    model = model.double()
    n_features = checkpoint.config.n_features
    eps = fixed_noise(manifest.latent.n_importance_samples, manifest.latent.latent_dim,
                      manifest.provenance.seed).double()
    with torch.no_grad():
        mu, logvar = model.encode(x)
        z = mu + torch.exp(0.5 * logvar) * eps  # (K, B, Z)
        log_px = model.log_px(x, model.decode(z)).numpy()  # (K, B)
        loc_at_mu = model.decode(mu)  # (B, 2F)
    recon_error = ((x - loc_at_mu[:, :n_features]) ** 2).sum(-1).numpy()
    scores = run_session(cpu_session(run.version_dir / "scorer.onnx"), "input", rows)
    np.testing.assert_allclose(scores["recon_prob_nll"], -_numpy_logmeanexp(log_px),
                               rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(scores["recon_error"], recon_error, rtol=1e-4, atol=1e-4)
    slack = 1e-5 * np.maximum(1.0, np.abs(scores["neg_elbo"]))
    assert (scores["recon_prob_nll"] <= scores["neg_elbo"] - scores["kl"] + slack).all()
