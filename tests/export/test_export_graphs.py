"""What the exported graphs compute: parity with PyTorch, the scoring math, determinism."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from latentwatch.export.exporter import export_run, load_run
from latentwatch.export.graphs import GraphDef, build_graphs, fixed_noise, run_torch
from latentwatch.export.sessions import cpu_session, run_session
from latentwatch.models.checkpoint import load_checkpoint
from latentwatch.repository.manifest import Manifest

if TYPE_CHECKING:
    from conftest import Exported

VAE_KINDS = ("vae", "beta-vae")
ALL_KINDS = ("vae", "ae", "beta-vae")


def _torch_graphs(run_dir: Path) -> dict[str, GraphDef]:
    inputs = load_run(run_dir)
    graphs = build_graphs(
        inputs.model,
        model_kind=inputs.model_kind,
        n_features=inputs.n_features,
        latent_dim=inputs.latent_dim,
        n_importance_samples=inputs.n_importance_samples,
        preprocessing=inputs.preprocessing,
        seed=inputs.provenance.seed,
    )
    return {g.name: g for g in graphs}


def _rows(run_dir: Path, n: int | None = None) -> np.ndarray:
    rows = np.load(run_dir / "calibration_rows.npy", allow_pickle=False)
    return rows if n is None else rows[:n]


def _score(version_dir: Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    return run_session(cpu_session(version_dir / "scorer.onnx"), "input", rows)


def _preprocessed(run_dir: Path, rows: np.ndarray) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model and the rows preprocessed by hand, straight from the checkpoint's numbers."""
    model, checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    pre = checkpoint.preprocessing
    x = (rows.astype(np.float64) - np.array(pre["shift"])) * np.array(pre["scale"])
    if pre["clip"] is not None:
        x = np.clip(x, *pre["clip"])
    return model, torch.from_numpy(x.astype(np.float32))


@pytest.mark.parametrize("graph", ["scorer", "encoder", "decoder"])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_onnx_runtime_matches_torch_at_batch_1_and_64(
    exported: dict[str, Exported], kind: str, graph: str
) -> None:
    model = exported[kind]
    manifest = Manifest.read(model.version_dir)
    references = _torch_graphs(model.run_dir)
    reference = references[graph]
    session = cpu_session(model.version_dir / f"{graph}.onnx")
    rows = _rows(model.run_dir, 64)
    if graph == "decoder":  # latents the decoder really sees, plus draws from the prior
        mu = run_torch(references["encoder"], torch.from_numpy(rows))["latent_mu"].numpy()
        prior = np.random.default_rng(0).standard_normal(mu.shape).astype(np.float32)
        rows = np.concatenate([mu[:32], prior[:32]])
    for batch in (1, 64):
        expected = run_torch(reference, torch.from_numpy(rows[:batch]))
        actual = run_session(session, reference.input_name, rows[:batch])
        assert list(actual) == list(expected)
        for name, value in expected.items():
            want = value.numpy()
            assert actual[name].shape == want.shape
            allowed = manifest.parity.atol + manifest.parity.rtol * np.abs(want).max()
            error = np.abs(actual[name] - want).max()
            assert error <= allowed, f"{graph}.{name} batch {batch}: {error} > {allowed}"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_scorer_takes_raw_rows_and_applies_the_training_preprocessing(
    exported: dict[str, Exported], kind: str
) -> None:
    model_dir = exported[kind]
    rows = _rows(model_dir.run_dir, 48)
    model, x = _preprocessed(model_dir.run_dir, rows)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        recon = model.reconstruct(model.decode(mu))
    expected = {
        "latent_mu": mu.numpy(),
        "recon_error": ((x - recon) ** 2).sum(dim=-1).numpy(),
    }
    if logvar is not None:
        expected["latent_logvar"] = logvar.numpy()
        expected["kl"] = (0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=-1)).numpy()
    scores = _score(model_dir.version_dir, rows)
    for name, want in expected.items():
        # atol: a collapsed posterior has KL near 0 as a difference of terms near 1 (float32)
        atol = 1e-5 * max(1.0, np.abs(want).max())
        np.testing.assert_allclose(scores[name], want, rtol=1e-4, atol=atol, err_msg=name)


@pytest.mark.parametrize("kind", VAE_KINDS)
def test_elbo_iwae_and_recon_prob_follow_their_definitions_with_the_fixed_draws(
    exported: dict[str, Exported], kind: str
) -> None:
    model_dir = exported[kind]
    manifest = Manifest.read(model_dir.version_dir)
    rows = _rows(model_dir.run_dir, 32)
    model, x = _preprocessed(model_dir.run_dir, rows)
    k = manifest.latent.n_importance_samples
    eps = fixed_noise(k, manifest.latent.latent_dim, manifest.provenance.seed).double()  # (K, 1, Z)
    model, x = model.double(), x.double()  # the reference in float64
    with torch.no_grad():
        mu, logvar = model.encode(x)
        sigma = (0.5 * logvar).exp()
        z = mu + sigma * eps  # (K, B, Z)
        log_px = model.log_px(x, model.decode(z))  # (K, B)
    kl = 0.5 * (mu**2 + sigma**2 - 1 - logvar).sum(dim=-1)
    log_w = log_px + Normal(0.0, 1.0).log_prob(z).sum(-1) - Normal(mu, sigma).log_prob(z).sum(-1)
    expected = {
        "neg_elbo": kl - log_px.mean(dim=0),
        "iwae_nll": -(torch.logsumexp(log_w, dim=0) - math.log(k)),
        "recon_prob_nll": -(torch.logsumexp(log_px, dim=0) - math.log(k)),
    }
    scores = _score(model_dir.version_dir, rows)
    np.testing.assert_array_equal(scores["score"], scores["neg_elbo"])
    for name, want in expected.items():
        np.testing.assert_allclose(scores[name], want.numpy(), rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("kind", VAE_KINDS)
def test_iwae_and_recon_prob_bounds_hold_on_every_row(
    exported: dict[str, Exported], kind: str, tmp_path: Path
) -> None:
    # The bounds need K >= 2 moment-matched draws (fixed_noise): exported here at K = 4.
    model_dir = exported[kind]
    version_dir = export_run(model_dir.run_dir, tmp_path / "repo", "k4", n_importance_samples=4,
                             select_statistics=False)
    normal = _rows(model_dir.run_dir)
    noise = np.random.default_rng(1).uniform(0, 16, size=(64, normal.shape[1]))
    for rows in (normal, noise.astype(np.float32)):
        scores = _score(version_dir, rows)
        slack = 1e-5 * np.maximum(1.0, np.abs(scores["neg_elbo"]))
        assert (scores["iwae_nll"] <= scores["neg_elbo"] + slack).all()
        # Jensen for the reconstruction probability: at most -mean_k log p(x|z_k).
        assert (scores["recon_prob_nll"] <= scores["neg_elbo"] - scores["kl"] + slack).all()


def test_fixed_noise_is_seeded_and_moment_matched() -> None:
    eps = fixed_noise(16, 8, seed=3)
    assert eps.shape == (16, 1, 8) and eps.dtype == torch.float32
    torch.testing.assert_close(eps, fixed_noise(16, 8, seed=3), rtol=0, atol=0)
    assert not torch.equal(eps, fixed_noise(16, 8, seed=4))
    torch.testing.assert_close(eps.mean(dim=0), torch.zeros(1, 8), rtol=0, atol=1e-6)
    torch.testing.assert_close(eps.pow(2).mean(dim=0), torch.ones(1, 8), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_row_scores_the_same_alone_and_in_any_batch(
    exported: dict[str, Exported], kind: str
) -> None:
    model_dir = exported[kind]
    session = cpu_session(model_dir.version_dir / "scorer.onnx")
    rows = _rows(model_dir.run_dir, 64)
    in_batch = run_session(session, "input", rows)
    reversed_batch = run_session(session, "input", rows[::-1].copy())
    for i in (0, 1, 31, 63):
        alone = run_session(session, "input", rows[i : i + 1])
        # Every scorer output (score kinds and latents). A kind the service computes from them
        # (the second stage) is not a graph output and inherits their batch independence.
        for name in in_batch:
            np.testing.assert_allclose(alone[name][0], in_batch[name][i], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(reversed_batch[name][63 - i], in_batch[name][i],
                                       rtol=1e-6, atol=1e-6)
    again = run_session(session, "input", rows)
    np.testing.assert_array_equal(again["score"], in_batch["score"])


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_noise_scores_higher_than_held_out_digits(exported: dict[str, Exported], kind: str) -> None:
    model_dir = exported[kind]
    normal = _score(model_dir.version_dir, _rows(model_dir.run_dir))["score"]
    noise_rows = np.random.default_rng(2).uniform(0, 16, size=(64, 64)).astype(np.float32)
    noise = _score(model_dir.version_dir, noise_rows)["score"]
    assert np.median(noise) > np.quantile(normal, 0.95)
