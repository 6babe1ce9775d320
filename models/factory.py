"""Build a model from its config, and pick the loss that trains it."""

from __future__ import annotations

import torch
from torch import Tensor

from latentwatch.models.ae import AE, ae_loss
from latentwatch.models.base import LatentModel
from latentwatch.models.config import ModelConfig
from latentwatch.models.losses import LossTerms
from latentwatch.models.vae import VAE, vae_loss


def build_model(config: ModelConfig) -> LatentModel:
    return AE(config) if config.kind == "ae" else VAE(config)


def model_loss(
    model: LatentModel, x: Tensor, generator: torch.Generator | None = None
) -> LossTerms:
    if isinstance(model, VAE):
        return vae_loss(model, x, generator)
    if isinstance(model, AE):
        return ae_loss(model, x, generator)
    raise TypeError(f"no loss for {type(model).__name__}")
