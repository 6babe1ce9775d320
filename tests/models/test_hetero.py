"""Heteroscedastic Gaussian decoder: layout of decode's output, the likelihood by hand, the
variance bound, checkpoints, the CLI choice, and that it learns a variance per row."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from latentwatch.cli.main import main as cli_main
from latentwatch.models import ModelConfig, build_model, load_checkpoint, save_checkpoint
from latentwatch.models.likelihood import DECODER_LOGVAR_MAX, DECODER_LOGVAR_MIN, bounded_logvar
from latentwatch.models.training import TrainConfig, run_training

B, K, F = 5, 3, 64


def _config(kind: str = "vae", body: str = "mlp") -> ModelConfig:
    return ModelConfig(
        kind=kind,  # type: ignore[arg-type]
        n_features=F,
        body=body,  # type: ignore[arg-type]
        image_shape=(1, 8, 8),
        hidden=(8, 16) if body == "conv" else (32, 16),
        latent_dim=4,
        decoder="gaussian-hetero",
    )


def _hand_log_px(x: np.ndarray, loc: np.ndarray) -> np.ndarray:
    """log N(x; mean, exp(logvar)) summed over features, float64, from the documented mapping
    logvar = MIN + (MAX - MIN) * sigmoid(raw + log(-MIN / MAX))."""
    mean, raw = loc[..., :F], loc[..., F:]
    offset = math.log(-DECODER_LOGVAR_MIN / DECODER_LOGVAR_MAX)
    logvar = DECODER_LOGVAR_MIN + (DECODER_LOGVAR_MAX - DECODER_LOGVAR_MIN) / (
        1.0 + np.exp(-(raw + offset))
    )
    var = np.exp(logvar)
    return (-0.5 * np.log(2 * np.pi * var) - (x - mean) ** 2 / (2 * var)).sum(axis=-1)


@pytest.mark.parametrize("kind", ["vae", "ae"])
@pytest.mark.parametrize("body", ["mlp", "conv"])
def test_decode_gives_mean_and_raw_logvar_and_reconstruct_the_mean(kind: str, body: str) -> None:
    torch.manual_seed(0)
    model = build_model(_config(kind, body)).eval()
    assert model.decoder_logvar is None  # no shared per-feature variance parameter
    x = torch.randn(B, F)
    with torch.no_grad():
        code, _ = model.encode(x)
        z = torch.randn(K, B, 4)
        loc = model.decode(z)  # (K, B, 2F)
        assert loc.shape == (K, B, 2 * F) and model.decode(code).shape == (B, 2 * F)
        for k in range(K):  # each slice decodes alone, as for the other decoders
            torch.testing.assert_close(loc[k], model.decode(z[k]))
        mean = model.reconstruct(loc)
        assert mean.shape == (K, B, F)
        torch.testing.assert_close(mean, loc[..., :F], rtol=0, atol=0)
        # The two halves are different outputs of the network, not one value repeated.
        assert not torch.allclose(loc[..., :F], loc[..., F:])
        log_px = model.log_px(x, loc)  # x (B, F) broadcasts against (K, B, 2F)
        assert log_px.shape == (K, B)
        np.testing.assert_allclose(
            log_px.double().numpy(),
            _hand_log_px(x.double().numpy(), loc.double().numpy()),
            rtol=1e-5,
        )


def test_log_px_against_torch_distributions_with_chosen_variances() -> None:
    model = build_model(_config())
    x, mean = torch.randn(B, F), torch.randn(B, F)
    target_logvar = torch.linspace(-5.0, 3.0, B * F).reshape(B, F)  # inside (MIN, MAX)
    # Invert the bounded mapping to get the raw outputs that give these log-variances.
    fraction = (target_logvar - DECODER_LOGVAR_MIN) / (DECODER_LOGVAR_MAX - DECODER_LOGVAR_MIN)
    raw = torch.logit(fraction.double()).float() - math.log(1.5)
    loc = torch.cat([mean, raw], dim=-1)  # (B, 2F)
    std = torch.exp(0.5 * target_logvar)
    expected = torch.distributions.Normal(mean, std).log_prob(x).sum(-1)
    torch.testing.assert_close(model.log_px(x, loc), expected, rtol=1e-4, atol=1e-3)
    # Each row has its own variances: a row's likelihood depends only on its own raw half.
    changed = loc.clone()
    changed[0, F:] += 1.0
    moved = model.log_px(x, changed) != model.log_px(x, loc)
    assert moved.tolist() == [True] + [False] * (B - 1)


def test_raw_zero_is_unit_variance() -> None:
    torch.testing.assert_close(bounded_logvar(torch.zeros(3)), torch.zeros(3), rtol=0, atol=1e-6)


@pytest.mark.parametrize("raw", [-1e30, -1e4, -80.0, 80.0, 1e4, 1e30, -math.inf, math.inf])
def test_variance_stays_in_bounds_for_extreme_raw_outputs(raw: float) -> None:
    logvar = bounded_logvar(torch.full((F,), raw))
    assert ((logvar >= DECODER_LOGVAR_MIN) & (logvar <= DECODER_LOGVAR_MAX)).all()
    expected = DECODER_LOGVAR_MIN if raw < 0 else DECODER_LOGVAR_MAX
    torch.testing.assert_close(logvar, torch.full((F,), expected), rtol=0, atol=1e-5)

    model = build_model(_config())
    x = torch.zeros(1, F)
    for error in (0.0, 1.0, 100.0):
        loc = torch.cat([torch.full((1, F), error), torch.full((1, F), raw)], dim=-1)
        assert torch.isfinite(model.log_px(x, loc)).all()
    # The density at the mean can never exceed the floor's: F * -0.5 * (log 2pi + MIN).
    at_mean = torch.cat([x, torch.full((1, F), raw)], dim=-1)
    ceiling = F * -0.5 * (math.log(2 * math.pi) + DECODER_LOGVAR_MIN)
    assert model.log_px(x, at_mean).item() <= ceiling + 1e-3


def test_gradients_stay_finite_at_the_bounds() -> None:
    model = build_model(_config())
    x = torch.randn(2, F)
    raw = torch.tensor([[-1e4] * F, [1e4] * F], requires_grad=True)
    loc = torch.cat([torch.randn(2, F), raw], dim=-1)
    model.log_px(x, loc).sum().backward()
    assert raw.grad is not None and torch.isfinite(raw.grad).all()


def test_other_decoders_refuse_to_split_and_hetero_has_no_shared_variance() -> None:
    hetero = build_model(_config())
    with pytest.raises(ValueError, match="per-feature variance"):
        hetero.decoder_log_variance()
    plain = build_model(ModelConfig(kind="vae", n_features=F, hidden=(8,), decoder="gaussian"))
    with pytest.raises(ValueError, match="one value per feature"):
        plain.split_loc(torch.zeros(1, F))


@pytest.mark.parametrize("body", ["mlp", "conv"])
def test_checkpoint_round_trip(tmp_path: Path, body: str) -> None:
    torch.manual_seed(1)
    config = dataclasses.replace(_config("vae", body), kind="beta-vae", beta=2.0)
    model = build_model(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # away from the init, so a fresh build would differ
            p.add_(0.1 * torch.randn_like(p))
    preprocessing = {"kind": "standardize", "shift": [0.0] * F, "scale": [1.0] * F, "clip": None}
    provenance = {
        "data": "synthetic", "n_train": 10, "n_validation": 2, "seed": 3, "epochs": 1,
        "final_losses": {"val_loss": 1.5}, "trained_at": "2026-01-01T00:00:00+00:00",
        "latentwatch_version": "0.1.0", "torch_version": torch.__version__,
    }
    save_checkpoint(tmp_path / "c.pt", model, preprocessing, provenance, [])
    loaded, ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt.config == config and ckpt.config.decoder == "gaussian-hetero"
    x, z = torch.randn(4, F), torch.randn(3, 4, 4)
    with torch.no_grad():
        loc = model.decode(z)
        torch.testing.assert_close(loaded.decode(z), loc, rtol=0, atol=0)
        torch.testing.assert_close(loaded.log_px(x, loc), model.log_px(x, loc), rtol=0, atol=0)


def _heteroscedastic_rows(n: int, seed: int) -> np.ndarray:
    """Two features: t, and t^2 plus noise whose std is 0.03 for t < 0 and 1.0 for t > 0."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(-1.0, 1.0, size=n)
    std = np.where(t < 0, 0.03, 1.0)
    return np.stack([t, t**2 + std * rng.normal(size=n)], axis=1).astype(np.float32)


def test_hetero_decoder_learns_row_dependent_variance(tmp_path: Path) -> None:
    """On data whose noise level depends on where a row lies, a variance per row fits better
    than one variance per feature, and the predicted variance follows the noise level."""
    np.save(tmp_path / "rows.npy", _heteroscedastic_rows(1000, seed=0))
    results = {}
    for decoder in ("gaussian", "gaussian-hetero"):
        results[decoder] = run_training(TrainConfig(
            data=str(tmp_path / "rows.npy"), model="vae", out=tmp_path / decoder,
            decoder=decoder, epochs=40, seed=0, progress=False,  # type: ignore[arg-type]
        ))
    hetero_val = results["gaussian-hetero"].final_losses["val_loss"]
    plain_val = results["gaussian"].final_losses["val_loss"]
    assert hetero_val < plain_val - 0.3, (hetero_val, plain_val)

    model, ckpt = load_checkpoint(tmp_path / "gaussian-hetero" / "checkpoint.pt")
    rows = np.array([[-0.5, 0.25], [0.5, 0.25]], dtype=np.float32)
    x = (torch.from_numpy(rows) - torch.tensor(ckpt.preprocessing["shift"])) * torch.tensor(
        ckpt.preprocessing["scale"]
    )
    with torch.no_grad():
        _, logvar = model.split_loc(model.decode(model.encode(x.float())[0]))  # (2, 2)
    # Feature 1's predicted variance is far lower on the quiet side (t < 0).
    assert logvar[0, 1] < logvar[1, 1] - 2.0, logvar
    metrics = json.loads((tmp_path / "gaussian-hetero" / "metrics.json").read_text())
    assert metrics["model_config"]["decoder"] == "gaussian-hetero"


def test_cli_accepts_the_hetero_decoder(tmp_path: Path) -> None:
    np.save(tmp_path / "rows.npy", _heteroscedastic_rows(120, seed=1))
    code = cli_main(["train", "--data", str(tmp_path / "rows.npy"), "--model", "ae", "--out",
                     str(tmp_path / "run"), "--decoder", "gaussian-hetero", "--epochs", "2"])
    assert code == 0
    model, ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt.config.decoder == "gaussian-hetero" and ckpt.preprocessing["kind"] == "standardize"
    assert model.decode(torch.zeros(1, ckpt.config.latent_dim)).shape == (1, 4)
