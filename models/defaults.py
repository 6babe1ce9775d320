"""Defaults that work without tuning: what a data source gets when a flag is left unset."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from latentwatch.data import Dataset
from latentwatch.families import family
from latentwatch.models.config import MIN_CONV_SIDE, BodyKind, DecoderKind, ModelConfig, ModelKind
from latentwatch.models.preprocessing import (
    min_max_preprocessing,
    scale_preprocessing,
    standardize_preprocessing,
)

logger = logging.getLogger(__name__)

CONV_CHANNELS = (32, 64)

# K, the fixed latent draws the exported scorer decodes per row for neg_elbo, iwae_nll and
# recon_prob_nll (one more decode at z = mu gives recon_error). Chosen on the quality
# benchmarks' selection half (benchmarks/k_study.py, benchmarks/image_ood.py --k-values).
# One draw: tables, 15 sets x 4 seeds, K=1 83.01 mean AUROC against K=16 82.92 (Wilcoxon p 0.16)
# with a 5.9x cheaper graph; images, every direction within 0.0005 AUROC of K=16 (the default's
# log_recon_error does not use the draws), 9x more rows/s. `--n-importance-samples` sets more.
TABULAR_IMPORTANCE_SAMPLES = 1
IMAGE_IMPORTANCE_SAMPLES = 1

# Images (digits, MNIST): a fixed epoch count. Digits has ~20 steps per epoch, MNIST ~650, so
# both train well within it and the default `make run` bootstrap stays a few seconds.
IMAGE_EPOCHS = 30
IMAGE_BATCH_SIZE = 64
IMAGE_PATIENCE = 5
# Tabular rows: epochs follow a budget of optimiser steps, so that a 200-row table gets as many
# updates as a 50,000-row one instead of a handful (30 epochs of 140 rows are 90 steps).
TABULAR_STEP_BUDGET = 4000
TABULAR_MIN_EPOCHS = 10  # large tables: every row is still seen several times
TABULAR_MAX_EPOCHS = 1000  # tiny tables: bounds the time spent on validation passes
# Early stopping waits this many steps without a better validation loss (a fifth of the
# budget), and never fewer than TABULAR_MIN_PATIENCE epochs: small validation splits are noisy.
TABULAR_PATIENCE_STEPS = 800
TABULAR_MIN_PATIENCE = 5
TABULAR_MIN_BATCH, TABULAR_MAX_BATCH = 64, 256
# DB-VAE resampling (models/dbvae.py). "paper" multiplies the weights of all latent dimensions,
# so a few rows take nearly all the probability (Fashion-MNIST with one class kept at 2%, 12,000
# rows, latent 16: an effective sample size of 1-16 of 7,500 rows, the model worse everywhere).
# "knn" by default: the joint k-NN density sees the rare class where the per-dimension histograms
# of "max" do not. benchmarks/bias.py (results/bias-fashion-mnist.json: 30,000 rows, a class kept
# at 2%, 10 epochs, the classifier head) cut the rare class's reconstruction-error gap by 37% for
# Bag and 41% for Trouser with "knn", by 35% and -12% (wider) with "max".
DEBIAS_MODE = "knn"
# Plain epochs before resampling starts: the weights of a random encoder mean nothing.
DEBIAS_WARMUP_EPOCHS = 1


def default_mlp_widths(n_features: int) -> tuple[int, int]:
    """About twice the feature count, as a power of two in [64, 512], then half of that."""
    first = int(min(512, max(64, 2 ** int(np.ceil(np.log2(2 * n_features))))))
    return first, max(32, first // 2)


def default_latent_dim(n_features: int, is_image: bool) -> int:
    if is_image:
        return 8 if n_features <= 64 else 16  # digits 8x8 -> 8; MNIST-sized -> 16
    return int(min(16, max(2, n_features // 3)))


def default_tabular_batch_size(n_train: int) -> int:
    """n_train / 64 rounded to a power of two (in log space), within [64, 256]: 64 up to
    ~5,800 training rows, 128 up to ~11,600, then 256. Small tables keep small batches, and so
    more steps per epoch; large ones get cheaper steps at a batch size that still trains well."""
    target = 2 ** round(math.log2(max(n_train, 1) / 64))
    return int(min(TABULAR_MAX_BATCH, max(TABULAR_MIN_BATCH, target)))


@dataclass(frozen=True)
class TrainSchedule:
    """How long and in what batches to train; `auto` names the values derived from the data."""

    epochs: int  # at most; early stopping usually ends sooner
    batch_size: int
    patience: int  # epochs without a better validation loss before stopping
    steps_per_epoch: int
    auto: tuple[str, ...]  # which of epochs / batch_size / patience were not given

    @property
    def max_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def describe(self) -> str:
        given = [name for name in ("epochs", "batch_size", "patience") if name not in self.auto]
        return (
            f"{self.epochs} epochs of {self.steps_per_epoch} steps (batch {self.batch_size}, "
            f"at most {self.max_steps} steps), patience {self.patience} epochs"
            + (f"; given: {', '.join(given)}" if given else "")
        )


def resolve_schedule(
    n_train: int,
    is_image: bool,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    patience: int | None = None,
) -> TrainSchedule:
    """Fill every None with the default for this data; values given by the user always win.

    Images keep fixed defaults. Tabular rows get a batch size from the row count, then enough
    epochs to reach TABULAR_STEP_BUDGET optimiser steps (within [MIN, MAX] epochs), and a
    patience of TABULAR_PATIENCE_STEPS steps expressed in epochs.
    """
    if n_train < 1:
        raise ValueError(f"n_train must be >= 1, got {n_train}")
    auto = tuple(
        name for name, value in (("epochs", epochs), ("batch_size", batch_size),
                                 ("patience", patience)) if value is None
    )
    if batch_size is None:
        batch_size = IMAGE_BATCH_SIZE if is_image else default_tabular_batch_size(n_train)
    steps_per_epoch = math.ceil(n_train / batch_size)
    if epochs is None:
        if is_image:
            epochs = IMAGE_EPOCHS
        else:
            wanted = math.ceil(TABULAR_STEP_BUDGET / steps_per_epoch)
            epochs = min(TABULAR_MAX_EPOCHS, max(TABULAR_MIN_EPOCHS, wanted))
    if patience is None:
        if is_image:
            patience = IMAGE_PATIENCE
        else:
            patience = math.ceil(TABULAR_PATIENCE_STEPS / steps_per_epoch)
            patience = max(TABULAR_MIN_PATIENCE, patience)
    return TrainSchedule(epochs=epochs, batch_size=batch_size, patience=patience,
                         steps_per_epoch=steps_per_epoch, auto=auto)


def default_n_importance_samples(is_image: bool) -> int:
    """K for a model of this data when `--n-importance-samples` is left unset."""
    return IMAGE_IMPORTANCE_SAMPLES if is_image else TABULAR_IMPORTANCE_SAMPLES


def resolve_model_config(
    dataset: Dataset,
    kind: ModelKind,
    *,
    body: Literal["auto"] | BodyKind = "auto",
    decoder: Literal["auto"] | DecoderKind = "auto",
    hidden: tuple[int, ...] | None = None,
    latent_dim: int | None = None,
    beta: float | None = None,
    n_importance_samples: int | None = None,
) -> ModelConfig:
    """Fill every 'auto'/None with the default for this data; ModelConfig validates the rest."""
    image_shape = dataset.image_shape
    if n_importance_samples is None:
        n_importance_samples = default_n_importance_samples(dataset.is_image)
    if body == "auto":
        conv_ok = image_shape is not None and min(image_shape[1:]) >= MIN_CONV_SIDE
        body = "conv" if conv_ok else "mlp"
    if decoder == "auto":
        decoder = "bernoulli" if dataset.is_image else "gaussian"
    if hidden is None:
        hidden = CONV_CHANNELS if body == "conv" else default_mlp_widths(dataset.n_features)
    if latent_dim is None:
        latent_dim = default_latent_dim(dataset.n_features, dataset.is_image)
    has_kl = family(kind).variational
    if not has_kl and beta is not None:
        logger.warning("beta=%s ignored: an autoencoder has no KL term", beta)
    if beta is None or not has_kl:
        beta = family(kind).default_beta
    return ModelConfig(
        kind=kind,
        n_features=dataset.n_features,
        body=body,
        image_shape=image_shape,
        hidden=tuple(hidden),
        latent_dim=latent_dim,
        decoder=decoder,
        beta=beta,
        n_importance_samples=n_importance_samples,
    )


def resolve_preprocessing(
    dataset: Dataset, config: ModelConfig, x_train: NDArray[np.float32]
) -> dict[str, Any]:
    """Images: x / max_value clipped to [0, 1]. Rows: standardise with training statistics, or
    min-max scale them to [0, 1] when a Bernoulli decoder was asked for."""
    if dataset.is_image:
        assert dataset.max_value is not None  # load_source sets it for every image source
        return scale_preprocessing(dataset.n_features, dataset.max_value)
    if config.decoder == "bernoulli":
        return min_max_preprocessing(x_train)
    return standardize_preprocessing(x_train)
