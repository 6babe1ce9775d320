"""The loss terms every model family reports."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class LossTerms(NamedTuple):
    """Batch means, nats per row: total = recon + β·kl (kl is 0 for the AE)."""

    total: Tensor
    recon: Tensor
    kl: Tensor
