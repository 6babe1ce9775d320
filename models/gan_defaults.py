"""Defaults of adversarial training that work without tuning (gan, cgan, pix2pix)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from latentwatch.data import Dataset
from latentwatch.errors import InvalidInput
from latentwatch.families import family
from latentwatch.models.defaults import default_mlp_widths
from latentwatch.models.gan import GANConfig
from latentwatch.models.pix2pix import Pix2PixConfig

if TYPE_CHECKING:  # gan_training.py imports this module
    from latentwatch.models.gan_training import GANTrainConfig

# Channels of the two conv stages: digits-sized images train well with half of what MNIST-sized
# ones get (the cGAN's samples are recognised as their label 100% of the time after 20 epochs).
SMALL_CONV_CHANNELS, CONV_CHANNELS = (32, 64), (64, 128)
SMALL_IMAGE_FEATURES = 256  # up to 16x16
PIX2PIX_CHANNELS = 32
# Epochs follow a budget of optimiser steps, as tabular VAEs do: digits (25 steps an epoch)
# gets 30 epochs (about 30 s on one core), MNIST (843) 1; pass --epochs for more.
GAN_STEP_BUDGET = 750
MIN_EPOCHS = 1


def default_gan_latent_dim(n_features: int, is_image: bool) -> int:
    if is_image:
        return 16 if n_features <= 64 else 64  # digits 8x8 -> 16; MNIST-sized -> 64
    return int(min(32, max(2, n_features)))


def default_gan_hidden(dataset: Dataset) -> tuple[int, ...]:
    if not dataset.is_image:
        return tuple(reversed(default_mlp_widths(dataset.n_features)))  # G widens towards F
    return SMALL_CONV_CHANNELS if dataset.n_features <= SMALL_IMAGE_FEATURES else CONV_CHANNELS


def resolve_gan_epochs(n_train: int, batch_size: int) -> int:
    steps_per_epoch = max(1, n_train // batch_size)
    return max(MIN_EPOCHS, math.ceil(GAN_STEP_BUDGET / steps_per_epoch))


def resolve_gan_config(config: GANTrainConfig, dataset: Dataset,
                       class_names: list[str] | None) -> GANConfig | Pix2PixConfig:
    """The model config from the flags and the data; InvalidInput names a bad combination."""
    try:
        if family(config.model).capabilities == ("translate",):
            assert dataset.image_shape is not None  # _prepare refused rows
            if config.hidden is not None and len(config.hidden) != 1:
                raise ValueError(f"pix2pix takes one channel count (--hidden 32), got "
                                 f"{list(config.hidden)}")
            channels = config.hidden[0] if config.hidden else PIX2PIX_CHANNELS
            return Pix2PixConfig(image_shape=dataset.image_shape, channels=channels,
                                 spectral_norm=config.spectral_norm)
        hidden = config.hidden or default_gan_hidden(dataset)
        return GANConfig(
            kind=config.model, n_features=dataset.n_features, image_shape=dataset.image_shape,
            latent_dim=config.latent_dim or default_gan_latent_dim(dataset.n_features,
                                                                   dataset.is_image),
            hidden=hidden, n_classes=len(class_names) if class_names else None,
            spectral_norm=config.spectral_norm, real_label=config.real_label,
            class_loss_weight=config.class_loss_weight,
        )
    except ValueError as err:
        raise InvalidInput(str(err)) from err
