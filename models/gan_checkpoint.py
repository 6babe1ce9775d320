"""Checkpoints of adversarial runs (gan, cgan, pix2pix): write and read the plain dict that
models/gan_training.py describes. Loaded with weights_only=True; nothing pickled is executed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

import latentwatch
from latentwatch.data import Dataset
from latentwatch.data.pairs import EdgeRecipe
from latentwatch.families import family, kinds_where, resolve
from latentwatch.models.checkpoint import CheckpointError
from latentwatch.models.gan import GAN, GAN_KINDS, GANConfig
from latentwatch.models.pix2pix import Pix2Pix, Pix2PixConfig
from latentwatch.models.run_dir import CHECKPOINT_FILE
from latentwatch.repository.manifest import Preprocessing, Provenance

GAN_CHECKPOINT_FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "kind", "config", "generator", "discriminator",
                 "preprocessing", "provenance", "history", "stabilisation")


@dataclass(frozen=True)
class GANCheckpoint:
    kind: str
    config: GANConfig | Pix2PixConfig
    preprocessing: dict[str, Any]  # the fields of Preprocessing
    provenance: dict[str, Any]  # the fields of Provenance
    history: list[dict[str, Any]]
    stabilisation: str
    output_range: list[float] | None  # [low, high] data units of image samples
    image_shape: tuple[int, int, int] | None
    class_names: list[str] | None  # cgan
    edge_map: EdgeRecipe | None  # pix2pix
    split: dict[str, Any]


def _plain(config: GANConfig | Pix2PixConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def save_gan_checkpoint(
    run_dir: Path, model: GAN | Pix2Pix, dataset: Dataset, preprocessing: dict[str, Any],
    history: list[dict[str, Any]], split: dict[str, Any], *,
    class_names: list[str] | None = None, recipe: EdgeRecipe | None = None,
) -> Path:
    preprocessing = Preprocessing.model_validate(preprocessing).model_dump(mode="json")
    final = {k: float(v) for k, v in history[-1].items() if k not in ("epoch", "seconds")}
    provenance = {
        "data": dataset.source, "n_train": int(split["n_train"]),
        "n_validation": int(split["n_held_out"]), "seed": int(split["seed"]),
        "epochs": len(history), "final_losses": final,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "latentwatch_version": latentwatch.__version__, "torch_version": torch.__version__,
    }
    if dataset.feature_names is not None:
        provenance["feature_names"] = list(dataset.feature_names)
    provenance = Provenance.model_validate(provenance).model_dump(mode="json",
                                                                  exclude_unset=True)
    shape = dataset.image_shape
    payload = {
        "format_version": GAN_CHECKPOINT_FORMAT_VERSION,
        "kind": model.config.kind,
        "config": _plain(model.config),
        "generator": _weights(model.generator),
        "discriminator": _weights(model.discriminator),
        "preprocessing": preprocessing,
        "output_range": [0.0, float(dataset.max_value)] if dataset.max_value else None,
        "image_shape": list(shape) if shape is not None else None,
        "class_names": list(class_names) if class_names is not None else None,
        "edge_map": asdict(recipe) if recipe is not None else None,
        "stabilisation": model.config.stabilisation,
        "provenance": provenance,
        "history": [dict(epoch) for epoch in history],
        "split": dict(split),
    }
    path = Path(run_dir) / CHECKPOINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind
    return path


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def is_adversarial_checkpoint(payload: dict[str, Any]) -> bool:
    """True for a gan/cgan/pix2pix checkpoint dict (VAE checkpoints carry no "kind")."""
    return payload.get("kind") in kinds_where(adversarial=True)


def load_gan_checkpoint(path: Path) -> tuple[GAN | Pix2Pix, GANCheckpoint]:
    """The model (eval mode, CPU) and its description; CheckpointError says what is wrong."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign or corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({err})") from err
    if not isinstance(payload, dict) or not is_adversarial_checkpoint(payload):
        raise CheckpointError(f"{path}: not a gan, cgan or pix2pix checkpoint")
    if missing := [k for k in REQUIRED_KEYS if k not in payload]:
        raise CheckpointError(f"{path}: missing keys {missing}")
    if payload["format_version"] != GAN_CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {payload['format_version']!r} is not "
                              f"supported (this version reads {GAN_CHECKPOINT_FORMAT_VERSION})")
    fam = family(payload["kind"])
    config_fields = dict(payload["config"])
    if payload["kind"] in GAN_KINDS:  # written before the class head: none
        config_fields.setdefault("class_loss_weight", 0.0)
    try:
        config = resolve(fam.config_class)(**config_fields)
        Preprocessing.model_validate(payload["preprocessing"])
        Provenance.model_validate(payload["provenance"])
        recipe = EdgeRecipe(**payload["edge_map"]) if payload.get("edge_map") else None
    except (TypeError, ValueError, ValidationError) as err:
        raise CheckpointError(f"{path}: invalid checkpoint contents: {err}") from err
    model = resolve(fam.model_class)(config)
    try:
        model.generator.load_state_dict(payload["generator"])
        model.discriminator.load_state_dict(payload["discriminator"])
    except (RuntimeError, TypeError) as err:
        raise CheckpointError(f"{path}: weights do not fit the model config: {err}") from err
    model.eval()
    shape = payload.get("image_shape")
    return model, GANCheckpoint(
        kind=payload["kind"], config=config, preprocessing=dict(payload["preprocessing"]),
        provenance=dict(payload["provenance"]), history=list(payload["history"]),
        stabilisation=str(payload["stabilisation"]), output_range=payload.get("output_range"),
        image_shape=tuple(shape) if shape is not None else None,  # type: ignore[arg-type]
        class_names=payload.get("class_names"), edge_map=recipe,
        split=dict(payload.get("split") or {}),
    )
