"""Decoder likelihoods log p(x | z), summed over features, in nats.

Written with elementwise ops only so that they export to ONNX (opset 17) unchanged and
broadcast x (B, F) against decoder outputs with extra leading dims, e.g. (K, B, F).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Per-feature decoder log-variance range: keeps the Gaussian likelihood finite on features that
# are (nearly) constant in training, and the variance sane on standardised data.
DECODER_LOGVAR_MIN = -6.0
DECODER_LOGVAR_MAX = 4.0

_LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_log_px(x: Tensor, logits: Tensor) -> Tensor:
    """-BCE-with-logits for x in [0, 1]: (..., F) against (..., F) -> (...)."""
    # x*l - log(1 + e^l), rearranged so that exp never overflows for large |l|.
    per_feature = x * logits - torch.relu(logits) - torch.log1p(torch.exp(-torch.abs(logits)))
    return per_feature.sum(dim=-1)


def gaussian_log_px(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """Diagonal Gaussian log-density; logvar (F,) broadcasts over rows: (..., F) -> (...)."""
    per_feature = -0.5 * (_LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))
    return per_feature.sum(dim=-1)
