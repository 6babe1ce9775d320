"""DB-VAE (Amini et al., "Uncovering and Mitigating Algorithmic Bias through Learned Latent
Structure", AIES 2019): a VAE trained on rows drawn, every epoch, with probabilities that favour
the sparse regions of its current latent space, and optionally a classifier head on the encoder
means trained jointly on those rows.

The weighting math lives in latentwatch.bias (shared with the served bias report); this module
only encodes rows, draws an epoch's sample, trains the head and writes the per-row weights.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from latentwatch.bias.density import effective_sample_size, resampling_log_weights
from latentwatch.bias.options import BiasOptions
from latentwatch.errors import InvalidInput
from latentwatch.models.base import LatentModel

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "sample_weights.csv"
ENCODE_BATCH_ROWS = 4096
HEAD_HIDDEN = 64
# Labels are class ids; more distinct values than this are almost surely not categories.
MAX_CLASSES = 1000


@dataclass(frozen=True)
class HeadConfig:
    """Everything needed to rebuild a classifier head (stored in checkpoints as a plain dict)."""

    latent_dim: int
    classes: tuple[int, ...]  # the data's labels, in output order
    hidden: int = HEAD_HIDDEN

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
        if self.latent_dim < 1 or self.hidden < 1:
            raise ValueError("latent_dim and hidden must be >= 1")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be at least 2 distinct labels, got {self.classes}")

    @property
    def n_classes(self) -> int:
        return len(self.classes)


class ClassifierHead(nn.Module):
    """A small MLP on the encoder means μ; its gradient also shapes the encoder, as in DB-VAE."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(config.latent_dim, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.n_classes),
        )

    def forward(self, mu: Tensor) -> Tensor:
        return self.net(mu)  # (B, Z) -> (B, C) logits


def class_indices(
    y: NDArray[np.int64] | None, source: str
) -> tuple[NDArray[np.int64], tuple[int, ...]]:
    """Labels -> (class index per row, the labels in index order); InvalidInput without labels."""
    if y is None:
        raise InvalidInput(
            f"--classifier needs class labels, and {source} has none (use an .npz with 'y', "
            "IDX images with their labels file beside them, or digits)"
        )
    classes, index = np.unique(np.asarray(y, dtype=np.int64), return_inverse=True)
    if len(classes) < 2:
        raise InvalidInput(f"--classifier needs at least 2 classes; {source} has {len(classes)}")
    if len(classes) > MAX_CLASSES:
        raise InvalidInput(
            f"--classifier: {source} has {len(classes)} distinct labels (at most {MAX_CLASSES}); "
            "labels must be class ids"
        )
    return index.astype(np.int64), tuple(int(c) for c in classes)


def classifier_loss(head: ClassifierHead, mu: Tensor, y: Tensor) -> tuple[Tensor, int]:
    """Mean cross-entropy of the head on means (B, Z) against class indices (B,), and the
    number of rows it gets right."""
    logits = head(mu)  # (B, Z) -> (B, C)
    correct = int((logits.argmax(dim=-1) == y).sum().item())
    return nn.functional.cross_entropy(logits, y), correct


@torch.no_grad()
def encoder_means(model: LatentModel, x: Tensor) -> NDArray[np.float64]:
    """μ for every row (N, F) -> (N, Z), in eval mode and batches; training mode is restored."""
    was_training = model.training
    model.eval()
    try:
        parts = [model.encode(x[start : start + ENCODE_BATCH_ROWS])[0]
                 for start in range(0, len(x), ENCODE_BATCH_ROWS)]
    finally:
        model.train(was_training)
    return torch.cat(parts).double().numpy()


@dataclass(frozen=True, eq=False)
class EpochSample:
    """One epoch's rows, drawn with replacement by the resampling weights of the current encoder."""

    rows: NDArray[np.int64]  # (n_draws,) positions into the training rows, in training order
    probability: NDArray[np.float64]  # (N,) each row's probability per draw (sums to 1)
    log_density: NDArray[np.float64]  # (N,) the latent log density the weights come from
    effective_sample_size: float


def weights_for(
    model: LatentModel, x: Tensor, options: BiasOptions
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(log_density, log_weight) of rows (N, F) under the model's current encoder."""
    mu = encoder_means(model, x)
    if not np.isfinite(mu).all():
        raise ValueError("the encoder gave non-finite means; training has diverged")
    return resampling_log_weights(mu, options.bins, options.alpha, options.mode)


def epoch_sample(
    model: LatentModel, x: Tensor, options: BiasOptions, *, n_draws: int, seed: int
) -> EpochSample:
    """Draw `n_draws` row positions with probabilities exp(log_weight): rows in sparse latent
    regions come up more often. The same model, rows and seed give the same sample."""
    log_density, log_weight = weights_for(model, x, options)
    # exp(log_weight) sums to 1 up to rounding; the generator wants it exactly.
    probability = np.exp(log_weight - log_weight.max())
    probability /= probability.sum()
    rows = np.random.default_rng(seed).choice(len(probability), size=n_draws, p=probability)
    return EpochSample(
        rows=rows.astype(np.int64),
        probability=probability,
        log_density=log_density,
        effective_sample_size=effective_sample_size(log_weight),
    )


def write_sample_weights(
    path: Path,
    rows: NDArray[np.int64],
    log_density: NDArray[np.float64],
    log_weight: NDArray[np.float64],
) -> float:
    """`row,weight,log_density` per training row (row: index into the data source; weights
    with mean 1, for a user's own weighted training); returns the effective sample size."""
    weight = np.exp(log_weight + np.log(len(log_weight)))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "weight", "log_density"])
        for row, w, d in zip(rows.tolist(), weight.tolist(), log_density.tolist(), strict=True):
            writer.writerow([row, repr(w), repr(d)])  # repr: round-trips the float exactly
    tmp.replace(path)
    return effective_sample_size(log_weight)
