"""What AE and VAE share: the decoder, its likelihood and the reconstruction mean.

The interface export relies on (keep it stable):
    encode(x (B, F)) -> (mu (B, Z), logvar (B, Z)), or (code (B, Z), None) for the AE
    decode(z (..., Z)) -> (..., F)   Bernoulli logits or Gaussian mean
    log_px(x (B, F), loc (..., B, F)) -> (..., B)   nats, summed over features
    reconstruct(loc (..., F)) -> (..., F)   mean in model space
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from latentwatch.models.bodies import build_decoder
from latentwatch.models.config import ModelConfig
from latentwatch.models.likelihood import (
    DECODER_LOGVAR_MAX,
    DECODER_LOGVAR_MIN,
    bernoulli_log_px,
    gaussian_log_px,
)


class LatentModel(nn.Module):
    decoder_logvar: nn.Parameter | None

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.decoder = build_decoder(config)
        if config.decoder == "gaussian":
            # One learned log-variance per feature, shared by all rows.
            self.decoder_logvar = nn.Parameter(torch.zeros(config.n_features))
        else:
            self.register_parameter("decoder_logvar", None)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)  # (..., Z) -> (..., F)

    def decoder_log_variance(self) -> Tensor:
        """The Gaussian decoder's per-feature log-variance (F,), clamped as log_px uses it."""
        if self.decoder_logvar is None:
            raise ValueError("a Bernoulli decoder has no variance parameter")
        return torch.clamp(self.decoder_logvar, DECODER_LOGVAR_MIN, DECODER_LOGVAR_MAX)

    def log_px(self, x: Tensor, loc: Tensor) -> Tensor:
        if self.config.decoder == "gaussian":
            return gaussian_log_px(x, loc, self.decoder_log_variance())  # (..., F) -> (...)
        return bernoulli_log_px(x, loc)  # (..., F) -> (...)

    def reconstruct(self, loc: Tensor) -> Tensor:
        return torch.sigmoid(loc) if self.config.decoder == "bernoulli" else loc
