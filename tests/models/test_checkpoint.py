"""Checkpoints: plain dicts loadable with weights_only=True, exact round trips, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from latentwatch.errors import DataError
from latentwatch.models import (
    CheckpointError,
    ModelConfig,
    build_model,
    load_checkpoint,
    save_checkpoint,
)

PROVENANCE = {
    "data": "synthetic",
    "n_train": 10,
    "n_validation": 2,
    "seed": 3,
    "epochs": 1,
    "final_losses": {"val_loss": 1.5},
    "trained_at": "2026-01-01T00:00:00+00:00",
    "latentwatch_version": "0.1.0",
    "torch_version": torch.__version__,
}
HISTORY = [{"epoch": 1, "train_loss": 2.0, "val_loss": 1.5, "val_kl": None}]


def _preprocessing(n: int) -> dict[str, Any]:
    return {"kind": "scale", "shift": [0.0] * n, "scale": [1 / 16] * n, "clip": [0.0, 1.0]}


def _randomised(config: ModelConfig) -> torch.nn.Module:
    torch.manual_seed(1)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():  # move away from the init so a fresh build would differ
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(kind="vae", n_features=64, body="conv", image_shape=(1, 8, 8), hidden=(4, 8),
                    latent_dim=3, decoder="gaussian"),
        ModelConfig(kind="ae", n_features=12, hidden=(16,), latent_dim=2),
        ModelConfig(kind="beta-vae", n_features=12, hidden=(16, 8), latent_dim=2, beta=4.0,
                    n_importance_samples=32),
        ModelConfig(kind="vae", n_features=12, hidden=(16,), latent_dim=2,
                    decoder="gaussian-hetero"),
        ModelConfig(kind="ae", n_features=64, body="conv", image_shape=(1, 8, 8), hidden=(4, 8),
                    latent_dim=3, decoder="gaussian-hetero"),
    ],
    ids=["vae-conv-gaussian", "ae-mlp-bernoulli", "beta-vae-mlp", "vae-mlp-hetero",
         "ae-conv-hetero"],
)
def test_round_trip_gives_identical_outputs(tmp_path: Path, config: ModelConfig) -> None:
    model = _randomised(config)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, _preprocessing(config.n_features), PROVENANCE, HISTORY,
                    split={"seed": 3, "n_calibration": 4})
    loaded, ckpt = load_checkpoint(path)
    assert not loaded.training
    assert ckpt.config == config and ckpt.history == HISTORY and ckpt.provenance == PROVENANCE
    assert ckpt.preprocessing == _preprocessing(config.n_features)
    assert ckpt.image_shape == config.image_shape and ckpt.split["n_calibration"] == 4

    x = torch.rand(6, config.n_features)
    z = torch.randn(5, 6, config.latent_dim)
    with torch.no_grad():
        for a, b in zip(model.encode(x), loaded.encode(x), strict=True):
            assert (a is None and b is None) or torch.equal(a, b)
        loc = model.decode(z)
        assert torch.equal(loc, loaded.decode(z))
        assert torch.equal(model.log_px(x, loc), loaded.log_px(x, loc))


def test_file_is_a_plain_dict_with_the_documented_keys(tmp_path: Path) -> None:
    config = ModelConfig(kind="vae", n_features=64, body="conv", image_shape=(1, 8, 8),
                         hidden=(4, 8))
    save_checkpoint(tmp_path / "c.pt", build_model(config), _preprocessing(64), PROVENANCE, [])
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    assert {"format_version", "config", "state_dict", "preprocessing", "provenance",
            "image_shape", "history"} <= payload.keys()
    assert payload["config"]["image_shape"] == [1, 8, 8] and payload["image_shape"] == [1, 8, 8]
    assert ModelConfig(**payload["config"]) == config


def test_save_refuses_provenance_that_breaks_the_manifest_contract(tmp_path: Path) -> None:
    model = build_model(ModelConfig(kind="ae", n_features=4, hidden=(4,)))
    incomplete = {k: v for k, v in PROVENANCE.items() if k != "seed"}
    with pytest.raises(ValueError, match="seed"):
        save_checkpoint(tmp_path / "c.pt", model, _preprocessing(4), incomplete, [])
    assert not (tmp_path / "c.pt").exists()


class _NotWeights:
    """A pickled object: weights_only loading must refuse to build it."""


def _payload(tmp_path: Path) -> dict[str, Any]:
    model = build_model(ModelConfig(kind="ae", n_features=4, hidden=(4,)))
    save_checkpoint(tmp_path / "good.pt", model, _preprocessing(4), PROVENANCE, [])
    return torch.load(tmp_path / "good.pt", weights_only=True)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda p: {k: v for k, v in p.items() if k != "state_dict"},
            r"missing keys \['state_dict'\]",
        ),
        (lambda p: {**p, "format_version": 99}, "format_version 99"),
        (lambda p: {**p, "config": {**p["config"], "kind": "gan"}}, "invalid checkpoint"),
        (lambda p: {**p, "config": {**p["config"], "n_features": 5}}, "5 features"),
        (lambda p: {**p, "provenance": {}}, "invalid checkpoint"),
        (lambda p: {**p, "state_dict": {}}, "weights do not fit"),
        (lambda p: [1, 2], "expected a dict"),
        (lambda p: _NotWeights(), "not a readable checkpoint"),
    ],
    ids=["missing-key", "format", "bad-config", "preprocessing-size", "provenance", "weights",
         "not-a-dict", "pickled-object"],
)
def test_bad_checkpoints_raise_clear_errors(tmp_path: Path, edit: Any, message: str) -> None:
    path = tmp_path / "bad.pt"
    torch.save(edit(_payload(tmp_path)), path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, DataError)  # the CLI reports it as a clean error


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip archive at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
