"""VAE, β-VAE and DB-VAE: Gaussian encoder q(z|x), standard normal prior, Bernoulli/Gaussian
decoder. DB-VAE is the same network; only its training differs (models/dbvae.py)."""

from __future__ import annotations

import torch
from torch import Tensor

from latentwatch.families import kinds_where
from latentwatch.models.base import LatentModel
from latentwatch.models.bodies import build_encoder
from latentwatch.models.config import ModelConfig
from latentwatch.models.losses import LossTerms

# Encoder log-variance range: keeps exp() finite early in training and in exported graphs.
ENCODER_LOGVAR_MIN = -12.0
ENCODER_LOGVAR_MAX = 8.0
VAE_KINDS = kinds_where(variational=True)


class VAE(LatentModel):
    def __init__(self, config: ModelConfig) -> None:
        if config.kind not in VAE_KINDS:
            raise ValueError(f"VAE takes kind {' or '.join(map(repr, VAE_KINDS))}, "
                             f"got {config.kind!r}")
        super().__init__(config)
        self.encoder = build_encoder(config, 2 * config.latent_dim)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        stats = self.encoder(x)  # (B, F) -> (B, 2Z)
        mu, logvar = stats.chunk(2, dim=-1)  # (B, 2Z) -> (B, Z), (B, Z)
        return mu, torch.clamp(logvar, ENCODER_LOGVAR_MIN, ENCODER_LOGVAR_MAX)


def reparameterize(
    mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps  # (B, Z)


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) in closed form, nats: (B, Z) -> (B,)."""
    return 0.5 * (mu**2 + torch.exp(logvar) - 1.0 - logvar).sum(dim=-1)


def vae_loss(model: VAE, x: Tensor, generator: torch.Generator | None = None) -> LossTerms:
    """Batch means of recon = -log p(x|z) at one reparameterised draw, and β-weighted KL."""
    return vae_loss_and_means(model, x, generator)[0]


def vae_loss_and_means(
    model: VAE, x: Tensor, generator: torch.Generator | None = None
) -> tuple[LossTerms, Tensor]:
    """vae_loss, and the encoder means (B, Z) it used: a head on μ trains from the same pass."""
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar, generator)
    recon = -model.log_px(x, model.decode(z))  # (B,)
    kl = kl_divergence(mu, logvar)  # (B,)
    total = recon + model.config.beta * kl
    return LossTerms(total=total.mean(), recon=recon.mean(), kl=kl.mean()), mu
