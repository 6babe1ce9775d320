"""Deterministic autoencoder: same bodies and decoder likelihood as the VAE, no KL term."""

from __future__ import annotations

import torch
from torch import Tensor

from latentwatch.families import kinds_where
from latentwatch.models.base import LatentModel
from latentwatch.models.bodies import build_encoder
from latentwatch.models.config import ModelConfig
from latentwatch.models.losses import LossTerms


class AE(LatentModel):
    def __init__(self, config: ModelConfig) -> None:
        if config.kind not in (ae_kinds := kinds_where(variational=False, adversarial=False)):
            raise ValueError(f"AE takes kind {' or '.join(map(repr, ae_kinds))}, "
                             f"got {config.kind!r}")
        super().__init__(config)
        self.encoder = build_encoder(config, config.latent_dim)

    def encode(self, x: Tensor) -> tuple[Tensor, None]:
        return self.encoder(x), None  # (B, F) -> (B, Z)


def ae_loss(model: AE, x: Tensor, generator: torch.Generator | None = None) -> LossTerms:
    """Reconstruction loss -log p(x | decode(encode(x))): BCE for Bernoulli, Gaussian NLL with
    the learned per-feature variance (a variance-weighted squared error) for Gaussian, or with
    the variance the decoder predicts per row for gaussian-hetero."""
    code, _ = model.encode(x)
    recon = -model.log_px(x, model.decode(code))  # (B,)
    zero = torch.zeros((), dtype=recon.dtype)
    return LossTerms(total=recon.mean(), recon=recon.mean(), kl=zero)
