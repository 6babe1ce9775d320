"""ModelConfig: everything needed to rebuild a model (stored in checkpoints as a plain dict)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from latentwatch.families import family, kinds_where

# A key of latentwatch.families.FAMILIES ("what a kind can do" lives there).
ModelKind = str
BodyKind = Literal["mlp", "conv"]
# gaussian: one learned variance per feature; gaussian-hetero: the decoder predicts a variance
# per row and feature alongside the mean.
DecoderKind = Literal["bernoulli", "gaussian", "gaussian-hetero"]

# The conv body halves height and width per layer; below this the feature maps vanish.
MIN_CONV_SIDE = 4


@dataclass(frozen=True)
class ModelConfig:
    kind: ModelKind
    n_features: int
    body: BodyKind = "mlp"
    image_shape: tuple[int, int, int] | None = None  # required for conv: (1, H, W), e.g. (1, 8, 8)
    hidden: tuple[int, ...] = (256, 128)  # mlp widths, or conv channels (one stride-2 conv each)
    latent_dim: int = 8
    decoder: DecoderKind = "bernoulli"
    beta: float = 1.0  # KL weight; a family with fixed_beta (the plain VAE) requires it
    n_importance_samples: int = 16  # K fixed draws used by the exported scorer

    def __post_init__(self) -> None:
        # Checkpoints store lists (asdict + torch.save); normalise so configs compare equal.
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.image_shape is not None:
            object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        object.__setattr__(self, "beta", float(self.beta))
        self._validate()

    def _validate(self) -> None:
        if family(self.kind).adversarial:  # UnknownModelKind (a ValueError) lists the kinds
            cls = family(self.kind).config_class.rpartition(":")[2]
            latent = " or ".join(map(repr, kinds_where(adversarial=False)))
            raise ValueError(f"model kind {self.kind!r} is adversarial (configured by {cls}): "
                             f"it has no encoder or scorer; ModelConfig takes {latent}")
        _one_of("body", self.body, BodyKind)
        _one_of("decoder", self.decoder, DecoderKind)
        if self.n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {self.n_features}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(
                f"hidden must be a non-empty list of positive sizes, got {self.hidden}"
            )
        if self.n_importance_samples < 1:
            raise ValueError(
                f"n_importance_samples must be >= 1, got {self.n_importance_samples}"
            )
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        fixed_beta = family(self.kind).fixed_beta
        if fixed_beta is not None and self.beta != fixed_beta:
            free = kinds_where(variational=True, fixed_beta=None, resampling=None)
            raise ValueError(
                f"kind {self.kind!r} requires beta {fixed_beta} (got {self.beta}); "
                f"use {' or '.join(map(repr, free))}"
            )
        if self.image_shape is not None:
            if len(self.image_shape) != 3 or min(self.image_shape) < 1:
                raise ValueError(f"image_shape must be (C, H, W), got {self.image_shape}")
            channels, height, width = self.image_shape
            if channels * height * width != self.n_features:
                raise ValueError(
                    f"image_shape {self.image_shape} holds {channels * height * width} values "
                    f"but n_features is {self.n_features}"
                )
        if self.body == "conv":
            if self.image_shape is None:
                raise ValueError("body 'conv' requires image_shape (1, H, W)")
            if self.image_shape[0] != 1:
                raise ValueError(f"conv body takes single-channel images, got {self.image_shape}")
            if min(self.image_shape[1:]) < MIN_CONV_SIDE:
                raise ValueError(
                    f"conv body needs images at least {MIN_CONV_SIDE}x{MIN_CONV_SIDE}, "
                    f"got {self.image_shape}"
                )

    @property
    def is_variational(self) -> bool:
        return family(self.kind).variational

    @property
    def decoder_outputs_per_feature(self) -> int:
        """2 for gaussian-hetero (mean and raw log-variance), else 1 (logits or mean)."""
        return 2 if self.decoder == "gaussian-hetero" else 1


def _one_of(name: str, value: object, choices: object) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
