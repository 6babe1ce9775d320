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
# The heteroscedastic decoder's raw output r = 0 maps to log-variance 0 (unit variance, the
# variance of a standardised feature), so a fresh model starts from a sensible likelihood.
_HETERO_RAW_OFFSET = math.log(-DECODER_LOGVAR_MIN / DECODER_LOGVAR_MAX)

_LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_log_px(x: Tensor, logits: Tensor) -> Tensor:
    """-BCE-with-logits for x in [0, 1]: (..., F) against (..., F) -> (...)."""
    # x*l - log(1 + e^l), rearranged so that exp never overflows for large |l|.
    per_feature = x * logits - torch.relu(logits) - torch.log1p(torch.exp(-torch.abs(logits)))
    return per_feature.sum(dim=-1)


def bounded_logvar(raw: Tensor) -> Tensor:
    """Heteroscedastic decoder log-variance: MIN + (MAX - MIN) * sigmoid(raw + offset), (...).

    Why a sigmoid rather than a clamp or a softplus floor: a clamp has zero gradient outside the
    range, so a row whose variance ran into the floor could never recover; a softplus floor bounds
    only from below and leaves exp(-logvar) free to underflow the precision for very uncertain
    features. The sigmoid is smooth, bounded on both sides for any raw value (including +-inf in
    float32), and its slope (at most (MAX - MIN) / 4 = 2.5) keeps the step sizes of the raw
    output and of the log-variance alike. The floor at MIN (std 0.05 on standardised data) is
    what stops the classic failure of heteroscedastic decoders: shrinking the variance of the
    rows it reconstructs well until the likelihood, and the gradients, blow up.
    """
    span = DECODER_LOGVAR_MAX - DECODER_LOGVAR_MIN
    return DECODER_LOGVAR_MIN + span * torch.sigmoid(raw + _HETERO_RAW_OFFSET)


def gaussian_log_px(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """Diagonal Gaussian log-density, (..., F) -> (...); logvar is (F,), broadcast over rows
    (per-feature variance), or (..., F) like mean (heteroscedastic, one variance per row)."""
    per_feature = -0.5 * (_LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))
    return per_feature.sum(dim=-1)
