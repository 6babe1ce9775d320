"""What AE and VAE share: the decoder, its likelihood and the reconstruction mean.

The interface export relies on (keep it stable):
    encode(x (B, F)) -> (mu (B, Z), logvar (B, Z)), or (code (B, Z), None) for the AE
    decode(z (..., Z)) -> loc (..., F) Bernoulli logits or Gaussian mean, or (..., 2F)
        [mean, raw log-variance] for the heteroscedastic Gaussian decoder
    log_px(x (B, F), loc (..., B, F or 2F)) -> (..., B)   nats, summed over features
    reconstruct(loc (..., F or 2F)) -> (..., F)   mean in model space
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
    bounded_logvar,
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
        else:  # Bernoulli has no variance; the heteroscedastic decoder predicts its own
            self.register_parameter("decoder_logvar", None)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)  # (..., Z) -> (..., F), or (..., 2F) for gaussian-hetero

    def decoder_log_variance(self) -> Tensor:
        """The Gaussian decoder's per-feature log-variance (F,), clamped as log_px uses it."""
        if self.decoder_logvar is None:
            raise ValueError(
                f"a {self.config.decoder} decoder has no per-feature variance parameter"
                + (" (see split_loc)" if self.config.decoder == "gaussian-hetero" else "")
            )
        return torch.clamp(self.decoder_logvar, DECODER_LOGVAR_MIN, DECODER_LOGVAR_MAX)

    def split_loc(self, loc: Tensor) -> tuple[Tensor, Tensor]:
        """Heteroscedastic decoder output -> (mean, bounded log-variance), (..., 2F) -> 2x (..., F).

        The log-variance goes through `bounded_logvar`, so it lies in
        [DECODER_LOGVAR_MIN, DECODER_LOGVAR_MAX] whatever the network outputs.
        """
        if self.config.decoder != "gaussian-hetero":
            raise ValueError(f"a {self.config.decoder} decoder outputs one value per feature")
        mean, raw_logvar = loc.chunk(2, dim=-1)  # (..., 2F) -> (..., F), (..., F)
        return mean, bounded_logvar(raw_logvar)

    def log_px(self, x: Tensor, loc: Tensor) -> Tensor:
        if self.config.decoder == "gaussian-hetero":
            mean, logvar = self.split_loc(loc)
            return gaussian_log_px(x, mean, logvar)  # (..., F) -> (...)
        if self.config.decoder == "gaussian":
            return gaussian_log_px(x, loc, self.decoder_log_variance())  # (..., F) -> (...)
        return bernoulli_log_px(x, loc)  # (..., F) -> (...)

    def reconstruct(self, loc: Tensor) -> Tensor:
        if self.config.decoder == "bernoulli":
            return torch.sigmoid(loc)
        if self.config.decoder == "gaussian-hetero":
            return loc.chunk(2, dim=-1)[0]  # the mean half: (..., 2F) -> (..., F)
        return loc
