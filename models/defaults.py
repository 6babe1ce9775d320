"""Defaults that work without tuning: what a data source gets when a flag is left unset."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from latentwatch.data import Dataset
from latentwatch.models.config import MIN_CONV_SIDE, BodyKind, DecoderKind, ModelConfig, ModelKind
from latentwatch.models.preprocessing import scale_preprocessing, standardize_preprocessing

logger = logging.getLogger(__name__)

CONV_CHANNELS = (32, 64)
# beta = 4 collapses the posterior on digits (KL ~0.01 nats per row); 2 keeps ~0.7 nats.
BETA_VAE_BETA = 2.0


def default_mlp_widths(n_features: int) -> tuple[int, int]:
    """About twice the feature count, as a power of two in [64, 512], then half of that."""
    first = int(min(512, max(64, 2 ** int(np.ceil(np.log2(2 * n_features))))))
    return first, max(32, first // 2)


def default_latent_dim(n_features: int, is_image: bool) -> int:
    if is_image:
        return 8 if n_features <= 64 else 16  # digits 8x8 -> 8; MNIST-sized -> 16
    return int(min(16, max(2, n_features // 3)))


def resolve_model_config(
    dataset: Dataset,
    kind: ModelKind,
    *,
    body: Literal["auto"] | BodyKind = "auto",
    decoder: Literal["auto"] | DecoderKind = "auto",
    hidden: tuple[int, ...] | None = None,
    latent_dim: int | None = None,
    beta: float | None = None,
    n_importance_samples: int = 16,
) -> ModelConfig:
    """Fill every 'auto'/None with the default for this data; ModelConfig validates the rest."""
    image_shape = dataset.image_shape
    if body == "auto":
        conv_ok = image_shape is not None and min(image_shape[1:]) >= MIN_CONV_SIDE
        body = "conv" if conv_ok else "mlp"
    if decoder == "auto":
        decoder = "bernoulli" if dataset.is_image else "gaussian"
    if hidden is None:
        hidden = CONV_CHANNELS if body == "conv" else default_mlp_widths(dataset.n_features)
    if latent_dim is None:
        latent_dim = default_latent_dim(dataset.n_features, dataset.is_image)
    if kind == "ae" and beta is not None:
        logger.warning("beta=%s ignored: an autoencoder has no KL term", beta)
    if beta is None or kind == "ae":
        beta = BETA_VAE_BETA if kind == "beta-vae" else 1.0
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
        low = x_train.min(axis=0).astype(np.float64)
        span = np.maximum(x_train.max(axis=0).astype(np.float64) - low, 1e-6)
        return {"kind": "scale", "shift": low.tolist(), "scale": (1.0 / span).tolist(),
                "clip": [0.0, 1.0]}
    return standardize_preprocessing(x_train)
