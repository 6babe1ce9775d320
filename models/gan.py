"""GAN and conditional GAN: a generator G(z[, label]) and a discriminator D(x[, label]).

Images (1, H, W) with H and W multiples of 4 (8x8 digits, 28x28 MNIST) get a DCGAN-style conv
pair; tabular rows get an MLP pair. Samples live in model space [0, 1] (a sigmoid output; the
training data is scaled to [0, 1] by its Preprocessing), so export bakes
`Preprocessing.invert` after the generator to return data units.

Stabilisation, chosen by measurement on digits (cGAN, 8x8, channels 32/64, Fréchet distance
on pixels to the training images, real-train vs held-out floor 0.20): one-sided label
smoothing (D's target for real rows 0.9; 1.74 vs 1.91 without, 20 epochs). Spectral norm on
the discriminator is available but off: at the DCGAN learning rate it kept D too weak to teach
G (60 epochs: 2.11 with it, 0.54 without); on MNIST (6,000 rows, 500 steps, channels 64/128)
it balanced the losses but its samples were recognised as their label less often (0.85 vs
0.90 by a logistic regression on real images) and varied less within a class. The generator
keeps DCGAN's batch norm; samples from eval mode (running statistics) and train mode differ by
< 0.05 in that distance. The cGAN embeds the label into z for the generator and uses a
projection discriminator (Miyato & Koyama 2018): logit = w.phi(x) + embed(y).phi(x). Beside it
a class head on phi(x) adds the auxiliary classification loss of AC-GAN (Odena et al. 2017):
D learns the class of real and generated images, G to make images of the asked class. On MNIST
(54,000 rows, batch 64, channels 64/128) at weight 1 it raised the share of samples a CNN
recognises as their label from 0.74 to 0.84 after 500 steps and from 0.83 to 0.90 after 1,750,
but on digits it made a class's samples alike (within-class spread 0.39 of the real digits',
0.67 without). Weight 0.1, the default, kept the spread (0.66; label share 0.99 vs 0.98) and on
MNIST still gave 0.92 after 1,250 steps (0.83 without).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from latentwatch.families import family, kinds_where

GAN_KINDS = kinds_where(adversarial=True, capabilities=("generate",))
LEAKY_SLOPE = 0.2  # DCGAN's discriminator activation
CONV_SIDE_MULTIPLE = 4  # two stride-2 stages: H and W must divide by 4


@dataclass(frozen=True)
class GANConfig:
    kind: str  # "gan" or "cgan"
    n_features: int
    image_shape: tuple[int, int, int] | None = None  # (1, H, W): conv pair; None: MLP pair
    latent_dim: int = 32
    # conv: channels of the two stages (G upsamples c2 -> c1 -> 1, D downsamples 1 -> c1 -> c2);
    # mlp: hidden widths of G (D uses them reversed).
    hidden: tuple[int, ...] = (64, 128)
    n_classes: int | None = None  # cgan: labels 0..n_classes-1
    label_embed_dim: int = 16  # cgan: size of the label embedding concatenated to z
    output: Literal["sigmoid"] = "sigmoid"  # model space [0, 1]
    spectral_norm: bool = False  # on every discriminator layer (see the module docstring)
    real_label: float = 0.9  # one-sided label smoothing: D's target for real rows
    # cgan: weight of the auxiliary classification loss (a class head on D's features); 0: none.
    class_loss_weight: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.image_shape is not None:
            object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        if self.kind not in GAN_KINDS:
            family(self.kind)  # UnknownModelKind names the known kinds
            raise ValueError(f"GANConfig takes kind {' or '.join(map(repr, GAN_KINDS))}, "
                             f"got {self.kind!r}")
        if self.n_features < 1 or self.latent_dim < 1:
            raise ValueError(f"n_features and latent_dim must be >= 1, got {self.n_features} "
                             f"and {self.latent_dim}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be positive sizes, got {self.hidden}")
        if family(self.kind).conditional != (self.n_classes is not None):
            raise ValueError(f"kind {self.kind!r}: n_classes is "
                             f"{'required' if family(self.kind).conditional else 'only for cgan'}")
        if self.n_classes is not None and self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        if not 0.5 < self.real_label <= 1.0:
            raise ValueError(f"real_label must be in (0.5, 1], got {self.real_label}")
        if not 0.0 <= self.class_loss_weight <= 100.0:
            raise ValueError(f"class_loss_weight must be in [0, 100], got "
                             f"{self.class_loss_weight}")
        if self.image_shape is not None:
            self._check_image()

    def _check_image(self) -> None:
        assert self.image_shape is not None
        channels, height, width = self.image_shape
        if channels * height * width != self.n_features:
            raise ValueError(f"image_shape {self.image_shape} does not hold {self.n_features} "
                             "values")
        if channels != 1 or height % CONV_SIDE_MULTIPLE or width % CONV_SIDE_MULTIPLE:
            raise ValueError(f"conv GAN takes single-channel images with sides divisible by "
                             f"{CONV_SIDE_MULTIPLE} (8x8, 28x28), got {self.image_shape}")
        if len(self.hidden) != 2:
            raise ValueError(f"conv GAN takes two channel counts, got hidden {self.hidden}")

    @property
    def conditional(self) -> bool:
        return self.n_classes is not None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample: (C, H, W) for images, (F,) for rows."""
        return self.image_shape if self.image_shape is not None else (self.n_features,)

    @property
    def classifies(self) -> bool:
        """Whether the discriminator has a class head (cgan with a class loss)."""
        return self.n_classes is not None and self.class_loss_weight > 0

    @property
    def stabilisation(self) -> str:
        parts = [f"one-sided label smoothing (real target {self.real_label:g})"]
        if self.spectral_norm:
            parts.insert(0, "spectral norm in the discriminator")
        if self.classifies:
            parts.append(f"auxiliary classification loss (weight {self.class_loss_weight:g})")
        return "; ".join(parts)


def with_spectral_norm(layer: nn.Module, on: bool) -> nn.Module:
    return spectral_norm(layer) if on else layer


class Generator(nn.Module):
    """forward(z (B, Z)[, labels (B,)]) -> (B, *sample_shape) in [0, 1]."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        extra = 0
        if config.n_classes is not None:
            self.label_embedding = nn.Embedding(config.n_classes, config.label_embed_dim)
            extra = config.label_embed_dim
        z_in = config.latent_dim + extra
        if config.image_shape is not None:
            c1, c2 = config.hidden
            _, height, width = config.image_shape
            self.start = (c2, height // 4, width // 4)
            self.project = nn.Sequential(
                nn.Linear(z_in, c2 * (height // 4) * (width // 4), bias=False),
                nn.BatchNorm1d(c2 * (height // 4) * (width // 4)), nn.ReLU())
            self.body: nn.Module = nn.Sequential(
                nn.ConvTranspose2d(c2, c1, 4, 2, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
                nn.ConvTranspose2d(c1, 1, 4, 2, 1))
        else:
            layers: list[nn.Module] = []
            width_in = z_in
            for width_out in config.hidden:
                layers += [nn.Linear(width_in, width_out, bias=False),
                           nn.BatchNorm1d(width_out), nn.ReLU()]
                width_in = width_out
            self.project = nn.Sequential(*layers)
            self.body = nn.Linear(width_in, config.n_features)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.config.n_classes is not None:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, self.label_embedding(labels)], dim=1)  # (B, Z) -> (B, Z + E)
        h = self.project(z)
        if self.config.image_shape is not None:
            h = h.view(-1, *self.start)  # (B, c2*h*w) -> (B, c2, H/4, W/4)
        return torch.sigmoid(self.body(h))  # (B, 1, H, W) or (B, F)


class Discriminator(nn.Module):
    """forward(x (B, *sample_shape)[, labels]) -> (B,) logits, higher = more real."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        sn = partial(with_spectral_norm, on=config.spectral_norm)
        if config.image_shape is not None:
            c1, c2 = config.hidden
            _, height, width = config.image_shape
            n_out = c2 * (height // 4) * (width // 4)
            self.features: nn.Module = nn.Sequential(
                sn(nn.Conv2d(1, c1, 4, 2, 1)), nn.LeakyReLU(LEAKY_SLOPE),
                sn(nn.Conv2d(c1, c2, 4, 2, 1)), nn.LeakyReLU(LEAKY_SLOPE), nn.Flatten())
        else:
            layers: list[nn.Module] = []
            width_in = config.n_features
            for width_out in reversed(config.hidden):
                layers += [sn(nn.Linear(width_in, width_out)), nn.LeakyReLU(LEAKY_SLOPE)]
                width_in = width_out
            self.features = nn.Sequential(*layers)
            n_out = width_in
        self.logit = sn(nn.Linear(n_out, 1))
        if config.n_classes is not None:
            self.projection = sn(nn.Embedding(config.n_classes, n_out))
        self.classifier = sn(nn.Linear(n_out, config.n_classes)) if (
            config.classifies and config.n_classes is not None) else None

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.scores(x, labels)[0]

    def scores(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(B,) real/fake logits and, with a class head, (B, n_classes) class logits."""
        phi = self.features(x)  # (B, *shape) -> (B, D)
        out = self.logit(phi).squeeze(1)  # (B,)
        if self.config.n_classes is not None:
            if labels is None:
                raise ValueError("a conditional discriminator needs labels")
            out = out + (self.projection(labels) * phi).sum(dim=1)
        return out, None if self.classifier is None else self.classifier(phi)


class GAN(nn.Module):
    """The pair, so that one object trains, checkpoints and samples."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)

    def prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn((n, self.config.latent_dim), generator=generator)  # (n, Z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               labels: Tensor | None = None) -> Tensor:
        """n samples from z ~ N(0, I) in eval mode, (n, *sample_shape) in model space."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generator(self.prior(n, generator), labels)
        finally:
            self.generator.train(was_training)


def bce_to(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, real_label: float) -> Tensor:
    """BCE with real rows at `real_label` (one-sided smoothing) and fakes at 0."""
    return bce_to(real_logits, real_label) + bce_to(fake_logits, 0.0)


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating: -log D(G(z)), strong gradients while D still wins."""
    return bce_to(fake_logits, 1.0)


def class_loss(class_logits: Tensor | None, labels: Tensor | None) -> Tensor | float:
    """Cross-entropy of the discriminator's class head against the labels; 0 without one."""
    if class_logits is None or labels is None:
        return 0.0
    return F.cross_entropy(class_logits, labels)


def gan_losses(model: GAN, real: Tensor, fake: Tensor, condition: Tensor | None,
               part: Literal["discriminator", "generator"]) -> Tensor:
    """The loss of one part for one batch; the discriminator's sees `fake` detached. With a
    class head, both add the weighted classification loss: D on real and generated images, G
    on its own (AC-GAN)."""
    d, weight = model.discriminator, model.config.class_loss_weight
    if part == "discriminator":
        real_logits, real_classes = d.scores(real, condition)
        fake_logits, fake_classes = d.scores(fake.detach(), condition)
        return discriminator_loss(real_logits, fake_logits, model.config.real_label) + weight * (
            class_loss(real_classes, condition) + class_loss(fake_classes, condition))
    fake_logits, fake_classes = d.scores(fake, condition)
    return generator_loss(fake_logits) + weight * class_loss(fake_classes, condition)
