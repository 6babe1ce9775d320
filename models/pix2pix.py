"""Pix2Pix (Isola et al. 2017): paired image-to-image translation, sketch -> image.

A U-Net generator (encoder-decoder with skip connections, dropout 0.5 in the decoder as the
reference uses in place of a noise input) and a PatchGAN discriminator that judges
(sketch, image) pairs patch by patch. Loss as the reference: BCE adversarial + 100 * L1 to the
true image; the discriminator's loss is halved; Adam 2e-4, beta1 0.5.

Sized for small single-channel images (8x8, 28x28): two stride-2 stages and a 3x3 bottleneck
instead of the reference's eight stages for 256x256. Images are in model space [0, 1] (sigmoid
output; the reference uses tanh and [-1, 1]). The discriminator has no normalisation;
spectral norm is available but off: on digits (15 epochs) held-out L1 was the same with and
without it (0.097 vs 0.096 in [0, 1] units; the better baseline, the mean training image, 0.194)
at 1.8x the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn

from latentwatch.models.gan import LEAKY_SLOPE, bce_to, with_spectral_norm

CONV_SIDE_MULTIPLE = 4


@dataclass(frozen=True)
class Pix2PixConfig:
    image_shape: tuple[int, int, int]  # (1, H, W), H and W multiples of 4
    kind: str = "pix2pix"
    channels: int = 32  # first stage; the second has twice as many, the bottleneck four times
    dropout: float = 0.5  # in the decoder, as the reference
    l1_weight: float = 100.0
    spectral_norm: bool = False  # discriminator layers (see the module docstring)
    output: Literal["sigmoid"] = "sigmoid"  # model space [0, 1]

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        if self.kind != "pix2pix":
            raise ValueError(f"Pix2PixConfig takes kind 'pix2pix', got {self.kind!r}")
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (1, H, W), got {self.image_shape}")
        channels, height, width = self.image_shape
        if channels != 1 or height % CONV_SIDE_MULTIPLE or width % CONV_SIDE_MULTIPLE:
            raise ValueError(f"pix2pix takes single-channel images with sides divisible by "
                             f"{CONV_SIDE_MULTIPLE} (8x8, 28x28), got {self.image_shape}")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.l1_weight >= 0:
            raise ValueError(f"l1_weight must be >= 0, got {self.l1_weight}")

    @property
    def n_features(self) -> int:
        c, h, w = self.image_shape
        return c * h * w

    @property
    def stabilisation(self) -> str:
        sn = "spectral norm in the discriminator; " if self.spectral_norm else ""
        return (f"{sn}L1 weight {self.l1_weight:g}; halved discriminator loss; decoder dropout "
                f"{self.dropout:g}")


class UNet(nn.Module):
    """forward(sketch (B, 1, H, W)) -> image (B, 1, H, W), both in model space [0, 1]."""

    def __init__(self, config: Pix2PixConfig) -> None:
        super().__init__()
        c = config.channels
        relu, leaky = nn.ReLU(), nn.LeakyReLU(LEAKY_SLOPE)
        self.down1 = nn.Conv2d(1, c, 4, 2, 1)  # (B, 1, H, W) -> (B, c, H/2, W/2)
        self.down2 = nn.Sequential(leaky, nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False),
                                   nn.BatchNorm2d(2 * c))  # -> (B, 2c, H/4, W/4)
        self.bottleneck = nn.Sequential(
            leaky, nn.Conv2d(2 * c, 4 * c, 3, 1, 1), relu,
            nn.Conv2d(4 * c, 2 * c, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * c),
            nn.Dropout(config.dropout))  # (B, 2c, H/4, W/4)
        self.up2 = nn.Sequential(relu, nn.ConvTranspose2d(4 * c, c, 4, 2, 1, bias=False),
                                 nn.BatchNorm2d(c), nn.Dropout(config.dropout))  # -> H/2
        self.up1 = nn.Sequential(relu, nn.ConvTranspose2d(2 * c, 1, 4, 2, 1))  # -> H

    def forward(self, x: Tensor) -> Tensor:
        d1 = self.down1(x)
        d2 = self.down2(d1)
        b = self.bottleneck(d2)
        u2 = self.up2(torch.cat([b, d2], dim=1))  # skip: (B, 4c, H/4, W/4)
        return torch.sigmoid(self.up1(torch.cat([u2, d1], dim=1)))  # skip: (B, 2c, H/2, W/2)


class PatchDiscriminator(nn.Module):
    """forward(sketch, image) -> (B, P, Q) logits, one per overlapping patch."""

    def __init__(self, config: Pix2PixConfig) -> None:
        super().__init__()
        c = config.channels
        sn = partial(with_spectral_norm, on=config.spectral_norm)
        self.net = nn.Sequential(
            sn(nn.Conv2d(2, c, 4, 2, 1)), nn.LeakyReLU(LEAKY_SLOPE),  # H -> H/2
            sn(nn.Conv2d(c, 2 * c, 4, 1, 1)), nn.LeakyReLU(LEAKY_SLOPE),  # -> H/2 - 1
            sn(nn.Conv2d(2 * c, 1, 4, 1, 1)))  # -> H/2 - 2

    def forward(self, sketch: Tensor, image: Tensor) -> Tensor:
        return self.net(torch.cat([sketch, image], dim=1)).squeeze(1)


class Pix2Pix(nn.Module):
    def __init__(self, config: Pix2PixConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = UNet(config)
        self.discriminator = PatchDiscriminator(config)


def pix2pix_losses(model: Pix2Pix, real: Tensor, fake: Tensor, condition: Tensor | None,
                   part: Literal["discriminator", "generator"]) -> Tensor:
    """One part's loss for a batch; `condition` is the sketch, `real` the true image."""
    if condition is None:
        raise ValueError("pix2pix losses need the sketch")
    d = model.discriminator
    if part == "discriminator":
        return 0.5 * (bce_to(d(condition, real), 1.0) + bce_to(d(condition, fake.detach()), 0.0))
    l1 = (fake - real).abs().mean()
    return bce_to(d(condition, fake), 1.0) + model.config.l1_weight * l1


def l1_error(model: Pix2Pix, sketch: Tensor, image: Tensor) -> float:
    """Mean absolute error of the translation in model units, eval mode (dropout off)."""
    was_training = model.generator.training
    model.generator.eval()
    try:
        with torch.no_grad():
            return float((model.generator(sketch) - image).abs().mean())
    finally:
        model.generator.train(was_training)
