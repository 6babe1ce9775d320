"""The default models a fresh machine gets from `latentwatch bootstrap` (and `make run`)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from latentwatch.export import bootstrap
from latentwatch.models import training
from latentwatch.repository.manifest import Manifest, verify_files

if TYPE_CHECKING:
    from conftest import Exported


def _no_training(*args: object, **kwargs: object) -> None:
    raise AssertionError("bootstrap trained although the repository already had models")


def test_a_repository_with_models_is_left_alone(
    exported: dict[str, Exported], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = exported["vae"].version_dir.parents[1]
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    monkeypatch.setattr(training, "train", _no_training)
    assert bootstrap.ensure_default_models(repo) == []
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before


def test_an_empty_repository_gets_digits_vae_and_digits_ae(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The defaults train up to 30 epochs; two keep this test quick and change nothing else.
    monkeypatch.setattr(training, "TrainConfig",
                        functools.partial(training.TrainConfig, epochs=2, progress=False))
    repo = tmp_path / "repo"
    (repo / "half-made").mkdir(parents=True)  # a folder without versions does not count
    created = bootstrap.ensure_default_models(repo)
    assert created == [repo / "digits-vae" / "1", repo / "digits-ae" / "1"]
    kinds = {}
    for version_dir in created:
        manifest = Manifest.read(version_dir)
        assert verify_files(version_dir, manifest) == []
        assert manifest.provenance.data == "digits" and manifest.provenance.epochs <= 2
        kinds[manifest.name] = manifest.model_kind
    assert kinds == {"digits-vae": "vae", "digits-ae": "ae"}
    assert bootstrap.ensure_default_models(repo) == []
