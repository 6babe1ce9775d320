"""Build a model from its config, and pick the loss that trains it."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from latentwatch.families import family, resolve
from latentwatch.models.base import LatentModel
from latentwatch.models.config import ModelConfig
from latentwatch.models.losses import LossTerms


def build_model(config: ModelConfig) -> LatentModel:
    """The family's model class (latentwatch.families), built from `config`."""
    return cast(LatentModel, resolve(family(config.kind).model_class)(config))


def model_loss(
    model: LatentModel, x: Tensor, generator: torch.Generator | None = None
) -> LossTerms:
    """The family's training loss for one batch (model.config.kind picks the family)."""
    return cast(LossTerms, resolve(family(model.config.kind).loss)(model, x, generator))
