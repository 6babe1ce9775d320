"""The label-free choice at export: recorded in the manifest, read back, used as the default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from pydantic import ValidationError

from latentwatch.export import selection as selection_module
from latentwatch.export.exporter import export_run
from latentwatch.repository.layout import MANIFEST_FILE, SECOND_STAGE_FILE
from latentwatch.repository.manifest import Manifest, verify_files
from latentwatch.scoring.second_stage import SecondStage
from latentwatch.service.offline import OfflineScorer

if TYPE_CHECKING:
    from conftest import Exported

PLAN = "max(neg_elbo,log_input_knn)"


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2))
    return (latent @ rng.normal(size=(2, 6)) + 0.1 * rng.normal(size=(n, 6))).astype(np.float32)


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny tabular VAE: 800 rows leave 80 validation rows, enough for the choice."""
    from latentwatch.models.training import TrainConfig, train

    root = tmp_path_factory.mktemp("selection-run")
    np.save(root / "rows.npy", _rows(800, 0), allow_pickle=False)
    return train(TrainConfig(data=str(root / "rows.npy"), model="vae", out=root / "run",
                             epochs=2, seed=0, progress=False))


def test_the_choice_and_its_evidence_are_read_back_from_the_manifest(
    tabular_run: Path, tmp_path: Path
) -> None:
    version = export_run(tabular_run, tmp_path, "rows")
    scoring = Manifest.read(version).require_scoring()
    selection, stage = scoring.selection, scoring.second_stage
    assert selection is not None and stage is not None and not selection.skipped
    assert selection.default == PLAN
    assert [c.name for c in selection.candidates] == [
        PLAN, "neg_elbo", "log_input_knn", "sum(neg_elbo,log_input_knn)"]
    assert selection.n_normal_rows == 80 and selection.seed == 0
    chosen = selection.candidate(selection.chosen)
    assert chosen is not None and chosen.statistics == stage.statistics
    assert scoring.default_score_kind == "stats_density"
    assert "without labels" in scoring.default_score_reason
    again = Manifest.read(export_run(tabular_run, tmp_path, "rows")).require_scoring()
    assert again.selection == selection  # same run, same seed: the same choice and evidence


def test_without_the_choice_the_plan_stays_and_nothing_is_recorded(
    tabular_run: Path, tmp_path: Path
) -> None:
    scoring = Manifest.read(export_run(tabular_run, tmp_path, "rows", select_statistics=False)
                            ).require_scoring()
    assert scoring.selection is None
    assert scoring.second_stage is not None
    assert scoring.second_stage.statistics == ["neg_elbo", "log_input_knn"]
    assert "benchmarks/quality.py" in scoring.default_score_reason


def test_a_changed_choice_is_what_the_version_serves(
    tabular_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_choose = selection_module.choose

    def knn_wins(*args: object, **kwargs: object):  # the real evidence, another verdict
        return real_choose(*args, **kwargs).model_copy(update={"chosen": "log_input_knn"})  # type: ignore[arg-type]

    monkeypatch.setattr(selection_module, "choose", knn_wins)
    version = export_run(tabular_run, tmp_path, "rows")
    manifest = Manifest.read(version)
    spec = manifest.require_scoring().second_stage
    assert spec is not None and spec.statistics == ["log_input_knn"]
    assert verify_files(version, manifest) == []  # the rewritten second_stage.npz is hashed
    stage = SecondStage.load(version / SECOND_STAGE_FILE, spec.statistics, spec.combine, spec.k)
    rows = _rows(50, 1)
    model_rows = manifest.input.preprocessing.apply(rows)
    served = OfflineScorer.from_version_dir(version).score(rows)["stats_density"]
    np.testing.assert_allclose(served, stage.score({}, model_rows))


def test_manifests_without_a_selection_still_load_and_a_false_one_is_refused(
    tabular_run: Path, tmp_path: Path
) -> None:
    version = export_run(tabular_run, tmp_path, "rows")
    data = json.loads((version / MANIFEST_FILE).read_text())
    old = json.loads(json.dumps(data))
    del old["scoring"]["selection"]
    assert Manifest.model_validate(old).require_scoring().selection is None
    data["scoring"]["second_stage"]["statistics"] = ["kl"]
    with pytest.raises(ValidationError, match="selection chose"):
        Manifest.model_validate(data)


def test_image_models_keep_the_plan_and_say_why(exported: dict[str, Exported]) -> None:
    selection = Manifest.read(exported["vae"].version_dir).require_scoring().selection
    assert selection is not None
    assert selection.skipped == selection_module.IMAGE_SKIP
    assert selection.chosen == selection.default and selection.candidates == []
    reason = Manifest.read(exported["vae"].version_dir).require_scoring().default_score_reason
    assert "benchmarks/quality.py" in reason and "image model" in reason


@pytest.mark.parametrize(("flag", "recorded"), [("--select-statistics", True),
                                                ("--no-select-statistics", False)])
def test_the_cli_switches_the_choice(
    tabular_run: Path, tmp_path: Path, flag: str, recorded: bool
) -> None:
    from latentwatch.cli.main import main

    assert main(["export", str(tabular_run), "--repo", str(tmp_path), "--name", "rows", flag]) == 0
    selection = Manifest.read(tmp_path / "rows" / "1").require_scoring().selection
    assert (selection is not None) == recorded
