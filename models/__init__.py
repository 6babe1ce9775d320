"""latentwatch.models: autoencoders and VAEs, their training and checkpoints (needs torch)."""

from latentwatch.models.ae import AE, ae_loss
from latentwatch.models.base import LatentModel
from latentwatch.models.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from latentwatch.models.config import ModelConfig
from latentwatch.models.factory import build_model, model_loss
from latentwatch.models.losses import LossTerms
from latentwatch.models.preprocessing import preprocess
from latentwatch.models.vae import VAE, kl_divergence, reparameterize, vae_loss

__all__ = [
    "AE",
    "VAE",
    "Checkpoint",
    "CheckpointError",
    "LatentModel",
    "LossTerms",
    "ModelConfig",
    "ae_loss",
    "build_model",
    "kl_divergence",
    "load_checkpoint",
    "model_loss",
    "preprocess",
    "reparameterize",
    "save_checkpoint",
    "vae_loss",
]
