"""Model interface: shapes, broadcasting and the likelihood/KL maths against torch.distributions."""

from __future__ import annotations

import itertools
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from latentwatch.models import (
    AE,
    VAE,
    ModelConfig,
    build_model,
    kl_divergence,
    model_loss,
)

B, K = 5, 3


def _config(kind: str, body: str, decoder: str, side: int = 8) -> ModelConfig:
    return ModelConfig(
        kind=kind,  # type: ignore[arg-type]
        n_features=side * side,
        body=body,  # type: ignore[arg-type]
        image_shape=(1, side, side),
        hidden=(8, 16) if body == "conv" else (32, 16),
        latent_dim=4,
        decoder=decoder,  # type: ignore[arg-type]
    )


def _inputs(config: ModelConfig, n: int = B) -> torch.Tensor:
    x = torch.rand(n, config.n_features, generator=torch.Generator().manual_seed(0))
    return x if config.decoder == "bernoulli" else 3 * x - 1.5


@pytest.mark.parametrize(
    ("kind", "body", "decoder"),
    list(itertools.product(["ae", "vae"], ["mlp", "conv"], ["bernoulli", "gaussian"])),
)
def test_interface_shapes(kind: str, body: str, decoder: str) -> None:
    torch.manual_seed(0)
    config = _config(kind, body, decoder)
    model = build_model(config).eval()
    assert isinstance(model, AE if kind == "ae" else VAE) and model.config == config
    x = _inputs(config)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        assert mu.shape == (B, 4)
        assert (logvar is None) == (kind == "ae")
        if logvar is not None:
            assert logvar.shape == (B, 4)
        loc = model.decode(mu)
        assert loc.shape == (B, 64)
        z = torch.randn(K, B, 4)
        loc_k = model.decode(z)  # (K, B, Z) -> (K, B, F)
        assert loc_k.shape == (K, B, 64)
        for k in range(K):  # leading dims are only a batch: each slice decodes alone
            torch.testing.assert_close(loc_k[k], model.decode(z[k]))
        log_px = model.log_px(x, loc_k)  # x (B, F) broadcasts against (K, B, F)
        assert log_px.shape == (K, B)
        for k in range(K):
            torch.testing.assert_close(log_px[k], model.log_px(x, loc_k[k]))
        mean = model.reconstruct(loc_k)
        assert mean.shape == (K, B, 64)
        if decoder == "bernoulli":
            assert (log_px <= 0).all()
            assert ((mean > 0) & (mean < 1)).all()
        else:
            assert model.decoder_logvar is not None and model.decoder_logvar.shape == (64,)
            torch.testing.assert_close(mean, loc_k)


def test_conv_body_on_mnist_sized_images() -> None:
    torch.manual_seed(0)
    model = build_model(_config("vae", "conv", "bernoulli", side=28)).eval()
    x = torch.rand(2, 784)
    mu, logvar = model.encode(x)
    assert mu.shape == (2, 4) and logvar is not None
    assert model.decode(torch.randn(K, 2, 4)).shape == (K, 2, 784)


def test_conv_body_on_odd_sized_images_crops_to_shape() -> None:
    model = build_model(_config("ae", "conv", "bernoulli", side=7)).eval()
    assert model.decode(model.encode(torch.rand(3, 49))[0]).shape == (3, 49)


def test_bernoulli_log_px_is_negative_bce_with_logits() -> None:
    model = build_model(_config("vae", "mlp", "bernoulli"))
    x = torch.rand(B, 64)
    logits = 30 * torch.randn(B, 64)  # large logits must not overflow
    expected = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    torch.testing.assert_close(model.log_px(x, logits), expected)


def test_gaussian_log_px_uses_learned_per_feature_variance() -> None:
    model = build_model(_config("vae", "mlp", "gaussian"))
    with torch.no_grad():
        model.decoder_logvar.copy_(torch.linspace(-2.0, 1.0, 64))  # type: ignore[union-attr]
    x, mean = torch.randn(B, 64), torch.randn(B, 64)
    std = torch.exp(0.5 * torch.linspace(-2.0, 1.0, 64))
    expected = torch.distributions.Normal(mean, std).log_prob(x).sum(-1)
    torch.testing.assert_close(model.log_px(x, mean), expected)


def test_gaussian_decoder_variance_is_clamped() -> None:
    model = build_model(_config("ae", "mlp", "gaussian"))
    with torch.no_grad():
        model.decoder_logvar.fill_(-50.0)  # type: ignore[union-attr]
    x = torch.zeros(1, 64)
    assert torch.isfinite(model.log_px(x, x + 1.0)).all()
    assert model.decoder_log_variance().min() > -50.0


def test_kl_matches_torch_distributions() -> None:
    mu, logvar = torch.randn(B, 4), torch.randn(B, 4)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)


@pytest.mark.parametrize("kind", ["ae", "vae", "beta-vae"])
def test_loss_decreases_on_a_tiny_fit(kind: str) -> None:
    torch.manual_seed(0)
    config = ModelConfig(
        kind=kind, n_features=16, hidden=(32,), latent_dim=2,  # type: ignore[arg-type]
        beta=4.0 if kind == "beta-vae" else 1.0,
    )
    model = build_model(config)
    # Four binary prototypes with a few flipped bits: structure a 2-D code can capture.
    gen = torch.Generator().manual_seed(1)
    prototypes = (torch.rand(4, 16, generator=gen) > 0.5).float()
    x = prototypes[torch.randint(0, 4, (64,), generator=gen)]
    x = torch.where(torch.rand(64, 16, generator=gen) < 0.05, 1 - x, x)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    noise = torch.Generator().manual_seed(2)
    first = model_loss(model, x, noise)
    assert torch.isclose(first.total, first.recon + config.beta * first.kl)
    for _ in range(60):
        terms = model_loss(model, x, noise)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
    last = model_loss(model, x, noise)
    assert last.total.item() < 0.9 * first.total.item()
    if kind == "ae":
        assert last.kl.item() == 0.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "flow"}, "kind must be one of"),
        ({"kind": "gan"}, "kind 'gan' is adversarial"),
        ({"kind": "vae", "beta": 4.0}, "requires beta 1.0"),
        ({"beta": 0.0}, "beta must be > 0"),
        ({"body": "conv", "image_shape": None}, "requires image_shape"),
        ({"image_shape": (1, 4, 4)}, "holds 16 values"),
        ({"body": "conv", "image_shape": (2, 8, 4)}, "single-channel"),
        ({"n_features": 4, "body": "conv", "image_shape": (1, 2, 2)}, "at least"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"hidden": ()}, "hidden"),
        ({"decoder": "poisson"}, "decoder must be one of"),
        ({"n_importance_samples": 0}, "n_importance_samples"),
    ],
)
def test_config_validation(changes: dict, message: str) -> None:
    base = {"kind": "beta-vae", "n_features": 64, "image_shape": (1, 8, 8), "beta": 2.0}
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**base, **changes})


def test_config_rebuilds_from_a_stored_dict_with_lists() -> None:
    config = _config("vae", "conv", "gaussian")
    stored = {**asdict(config), "hidden": list(config.hidden), "image_shape": [1, 8, 8]}
    assert ModelConfig(**stored) == config
