"""Self-describing checkpoints: a plain dict of tensors, numbers, strings, lists and dicts.

Saved with torch.save and loaded with `weights_only=True`, so nothing pickled is executed.
Rebuilt with `ModelConfig(**ckpt["config"])`. A DB-VAE run may add its classifier head under
"classifier" (config and weights, read by load_classifier) and its resampling settings under
"debias"; neither is part of the model that export reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from latentwatch.errors import DataError
from latentwatch.models.base import LatentModel
from latentwatch.models.config import ModelConfig
from latentwatch.models.dbvae import ClassifierHead, HeadConfig
from latentwatch.models.factory import build_model
from latentwatch.repository.manifest import Preprocessing, Provenance

CHECKPOINT_FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "config", "state_dict", "preprocessing", "provenance", "history")


class CheckpointError(DataError):
    """A checkpoint file that is missing, unreadable or not in the expected format."""


@dataclass(frozen=True)
class Checkpoint:
    config: ModelConfig
    preprocessing: dict[str, Any]  # the fields of latentwatch.repository.manifest.Preprocessing
    provenance: dict[str, Any]  # the fields of latentwatch.repository.manifest.Provenance
    history: list[dict[str, Any]]  # one dict of losses per epoch
    image_shape: tuple[int, int, int] | None = None
    # How the rows were split (seed, fractions, counts); empty for checkpoints saved without it.
    split: dict[str, Any] = field(default_factory=dict)
    format_version: int = CHECKPOINT_FORMAT_VERSION
    # dbvae: the resampling settings (bins, alpha, mode, warmup_epochs, classifier_weight), and
    # the classifier head's HeadConfig fields when it has one; empty / None otherwise.
    debias: dict[str, Any] = field(default_factory=dict)
    classifier: dict[str, Any] | None = None


def save_checkpoint(
    path: Path,
    model: LatentModel,
    preprocessing: dict[str, Any],
    provenance: dict[str, Any],
    history: list[dict[str, Any]],
    *,
    split: dict[str, Any] | None = None,
    classifier: ClassifierHead | None = None,
    debias: dict[str, Any] | None = None,
) -> None:
    # Validate against the manifest contract now rather than at export time.
    preprocessing = Preprocessing.model_validate(preprocessing).model_dump(mode="json")
    # Only the fields given: optional ones (feature_names, ...) stay absent when unset.
    provenance = Provenance.model_validate(provenance).model_dump(mode="json", exclude_unset=True)
    config = model.config
    image_shape = list(config.image_shape) if config.image_shape is not None else None
    payload = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": {**asdict(config), "hidden": list(config.hidden), "image_shape": image_shape},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "preprocessing": preprocessing,
        "provenance": provenance,
        "image_shape": image_shape,
        "history": [dict(epoch) for epoch in history],
        "split": dict(split or {}),
        "debias": dict(debias or {}),
    }
    if classifier is not None:
        payload["classifier"] = {
            "config": {**asdict(classifier.config), "classes": list(classifier.config.classes)},
            "state_dict": {k: v.detach().cpu().clone() for k, v in classifier.state_dict().items()},
        }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign or corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({err})") from err
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(payload).__name__}")
    return payload


def load_checkpoint(path: Path) -> tuple[LatentModel, Checkpoint]:
    """The model (eval mode, CPU) and its description."""
    path = Path(path)
    payload = _read(path)
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    if payload["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {payload['format_version']!r} is not supported "
            f"(this version reads {CHECKPOINT_FORMAT_VERSION})"
        )
    try:
        config = ModelConfig(**payload["config"])
        Preprocessing.model_validate(payload["preprocessing"])
        Provenance.model_validate(payload["provenance"])
    except (TypeError, ValueError, ValidationError) as err:
        raise CheckpointError(f"{path}: invalid checkpoint contents: {err}") from err
    if len(payload["preprocessing"]["shift"]) != config.n_features:
        raise CheckpointError(f"{path}: preprocessing does not match {config.n_features} features")
    model = build_model(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError) as err:
        raise CheckpointError(f"{path}: weights do not fit the model config: {err}") from err
    model.eval()
    image_shape = payload.get("image_shape")
    checkpoint = Checkpoint(
        config=config,
        preprocessing=dict(payload["preprocessing"]),
        provenance=dict(payload["provenance"]),
        history=list(payload["history"]),
        image_shape=tuple(image_shape) if image_shape is not None else None,  # type: ignore[arg-type]
        split=dict(payload.get("split") or {}),
        format_version=payload["format_version"],
        debias=dict(payload.get("debias") or {}),
        classifier=dict(payload["classifier"]["config"]) if payload.get("classifier") else None,
    )
    return model, checkpoint


def load_classifier(path: Path) -> ClassifierHead | None:
    """A dbvae run's classifier head (eval mode, CPU), or None when the run trained none."""
    path = Path(path)
    stored = _read(path).get("classifier")
    if not stored:
        return None
    try:
        head = ClassifierHead(HeadConfig(**stored["config"]))
        head.load_state_dict(stored["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: invalid classifier head: {err}") from err
    return head.eval()
