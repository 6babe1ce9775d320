"""The default models a fresh machine gets from `latentwatch bootstrap` (and `make run`).

The whole bootstrap trains five models for a minute or more; these tests pick some of them
(`names`) and cap their epochs (`max_epochs`), which changes nothing else about the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from latentwatch.cli.main import main
from latentwatch.errors import InvalidInput
from latentwatch.export import bootstrap
from latentwatch.models import training
from latentwatch.repository.manifest import Manifest, verify_files
from latentwatch.repository.reader import read_version

if TYPE_CHECKING:
    from conftest import Exported

GENERATORS = ("digits-gan", "digits-cgan", "digits-pix2pix")


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


def test_the_defaults_are_the_two_scorers_and_the_three_generators() -> None:
    assert bootstrap.DEFAULT_NAMES == ("digits-vae", "digits-ae", *GENERATORS)
    assert {m.name: m.kind for m in bootstrap.DEFAULT_MODELS} == {
        "digits-vae": "vae", "digits-ae": "ae", "digits-gan": "gan", "digits-cgan": "cgan",
        "digits-pix2pix": "pix2pix"}


def test_an_empty_repository_gets_digits_vae_and_digits_ae(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "half-made").mkdir(parents=True)  # a folder without versions does not count
    created = bootstrap.ensure_default_models(repo, ["digits-ae", "digits-vae"], max_epochs=2)
    # In the defaults' order, whatever the order asked for.
    assert created == [repo / "digits-vae" / "1", repo / "digits-ae" / "1"]
    kinds = {}
    for version_dir in created:
        manifest = Manifest.read(version_dir)
        assert verify_files(version_dir, manifest) == []
        assert manifest.provenance.data == "digits" and manifest.provenance.epochs <= 2
        kinds[manifest.name] = manifest.model_kind
    assert kinds == {"digits-vae": "vae", "digits-ae": "ae"}
    assert bootstrap.ensure_default_models(repo) == []


def test_the_generators_are_exported_with_their_capabilities(tmp_path: Path) -> None:
    repo, runs = tmp_path / "repo", tmp_path / "runs"
    created = bootstrap.ensure_default_models(repo, GENERATORS, max_epochs=1, runs_dir=runs)
    assert created == [repo / name / "1" for name in GENERATORS]
    found = {}
    for version_dir in created:
        name = version_dir.parent.name
        manifest = read_version(name, "1", version_dir).manifest  # the server's checks
        spec = manifest.require_generation()
        found[name] = (manifest.model_kind, manifest.capabilities, spec.n_classes,
                       spec.dropout_at_inference is not None)
        assert manifest.provenance.data == "digits" and manifest.provenance.epochs == 1
        assert spec.output_shape == [1, 8, 8] and spec.output_range == [0.0, 16.0]
        # The kept run holds the epoch's sample grid a person looks at.
        assert (runs / name / "samples" / "epoch_001.png").stat().st_size > 0
    assert found == {
        "digits-gan": ("gan", ["generate"], None, False),
        "digits-cgan": ("cgan", ["generate"], 10, False),
        "digits-pix2pix": ("pix2pix", ["translate"], None, True),
    }


def test_unknown_names_and_bad_caps_are_refused_before_any_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training, "train", _no_training)
    with pytest.raises(InvalidInput, match=r"digits-vae, digits-ae, digits-gan.*'digits-gna'"):
        bootstrap.ensure_default_models(tmp_path, ["digits-gan", "digits-gna"])
    with pytest.raises(InvalidInput, match="none"):
        bootstrap.ensure_default_models(tmp_path, [])
    with pytest.raises(InvalidInput, match="max_epochs"):
        bootstrap.ensure_default_models(tmp_path, ["digits-vae"], max_epochs=0)
    assert list(tmp_path.iterdir()) == []


def test_the_cli_names_a_wrong_model_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bootstrap", "--repo", str(tmp_path / "r"), "--models", "digits-vae,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("latentwatch bootstrap: error: default models are digits-vae")
    assert err.endswith("got 'nope'") and "\n" not in err
    assert not (tmp_path / "r").exists()
