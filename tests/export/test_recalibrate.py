"""`latentwatch recalibrate`: new normal rows -> a new version with a new calibration.

A real exported model (tests/export/conftest.py), copied into a repository of its own; the new
version is checked file by file, over a real server, and from a torch-free subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from latentwatch.client.client import LatentwatchClient
from latentwatch.errors import InvalidInput
from latentwatch.export.errors import ExportError
from latentwatch.export.recalibrate import recalibrate
from latentwatch.repository.layout import (
    CALIBRATION_FILE,
    MANIFEST_FILE,
    STAGING_PREFIX,
    TRITON_CONFIG_FILE,
)
from latentwatch.repository.manifest import Manifest
from latentwatch.repository.reader import read_version

KIND = "beta-vae"  # the MLP body: it has a second stage and a latent reference to carry over
ALPHA = 0.05
ROOT = Path(__file__).resolve().parents[2]


def _digits() -> NDArray[np.float32]:
    from sklearn.datasets import load_digits

    return np.asarray(load_digits().data, dtype=np.float32)


def _shifted_normal_rows() -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Digits with thinner strokes (faint pixels dropped, as a new scanner's threshold would):
    still normal, but not what the model was calibrated on (at alpha 0.05 it flags about 40%).
    Shuffled and split into (calibration rows, held-out rows)."""
    rng = np.random.default_rng(7)
    X = _digits()
    thin = np.where(X > 8, X, 0.0)
    rows = thin.astype(np.float32)[rng.permutation(len(X))]
    half = len(rows) // 2
    return rows[:half], rows[half:]


def _tree_digest(directory: Path) -> dict[str, tuple[str, int]]:
    """name -> (sha256, mtime_ns) of every file in `directory`."""
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(directory.iterdir())
    }


@pytest.fixture
def repo(exported: dict, tmp_path: Path) -> Path:
    """A repository holding a copy of the exported beta-VAE's version 1 only."""
    source = exported[KIND].version_dir
    repo = tmp_path / "repo"
    shutil.copytree(source, repo / source.parent.name / "1")
    return repo


def _model(repo: Path) -> str:
    (model,) = [p.name for p in repo.iterdir()]
    return model


def test_new_version_carries_every_other_file_and_leaves_the_old_one(repo: Path) -> None:
    model = _model(repo)
    v1 = repo / model / "1"
    before = _tree_digest(v1)
    calibration_rows, _ = _shifted_normal_rows()

    done = recalibrate(repo, model, calibration_rows, source="thin.npy")

    assert done.version_dir == repo / model / "2" and done.from_version == "1"
    assert _tree_digest(v1) == before  # bytes and mtimes: the old version untouched
    old, new = Manifest.read(v1), Manifest.read(done.version_dir)
    assert sorted(p.name for p in done.version_dir.iterdir()) == sorted(p.name
                                                                        for p in v1.iterdir())
    for name in old.sha256:
        if name not in (CALIBRATION_FILE, "explain.npz"):
            assert (done.version_dir / name).read_bytes() == (v1 / name).read_bytes(), name
    # Explanations are standardised against the new calibration rows, as export does.
    stats = read_version(model, "2", done.version_dir).explain
    assert stats is not None and stats.statistic == read_version(model, "1", v1).explain.statistic
    assert not np.array_equal(stats.mean, read_version(model, "1", v1).explain.mean)
    calibration = np.load(done.version_dir / CALIBRATION_FILE)
    assert calibration.shape == (len(calibration_rows), len(old.require_scoring().score_kinds))
    assert not np.array_equal(np.sort(calibration, axis=0)[:10],
                              np.sort(np.load(v1 / CALIBRATION_FILE), axis=0)[:10])

    # The manifest: only the version, calibration, provenance note, sha256 and created_at move.
    assert new.version == "2"
    spec = new.require_scoring().calibration
    assert spec.size == len(calibration_rows)
    assert spec.split.startswith(
        f"{len(calibration_rows)} rows of thin.npy given to `latentwatch recalibrate` on "
    )
    assert spec.default_alpha == old.require_scoring().calibration.default_alpha
    (note,) = new.provenance.recalibrations
    assert (note.from_version, note.data, note.n_rows) == ("1", "thin.npy",
                                                           len(calibration_rows))
    assert new.provenance.model_copy(update={"recalibrations": []}) == old.provenance
    assert new.sha256[CALIBRATION_FILE] != old.sha256[CALIBRATION_FILE]
    unchanged = {"graphs", "input", "latent", "reference", "parity", "onnx", "capabilities"}
    old_json, new_json = json.loads(old.to_json()), json.loads(new.to_json())
    assert {k: new_json[k] for k in unchanged} == {k: old_json[k] for k in unchanged}
    assert new_json["scoring"]["second_stage"] == old_json["scoring"]["second_stage"]

    # The reader trusts it (every sha256 matches), and Triton's config describes it.
    files = read_version(model, "2", done.version_dir)
    assert len(files.calibration[new.require_scoring().default_score_kind]) == spec.size
    assert (repo / model / TRITON_CONFIG_FILE).is_file()
    assert not [p for p in (repo / model).iterdir() if p.name.startswith(STAGING_PREFIX)]


def test_recalibrating_a_recalibrated_version_keeps_the_history(repo: Path) -> None:
    model = _model(repo)
    rows, more = _shifted_normal_rows()
    recalibrate(repo, model, rows, source="a.npy")
    done = recalibrate(repo, model, more, source="b.npy", default_alpha=0.1)
    manifest = Manifest.read(done.version_dir)
    assert manifest.version == "3"
    assert [n.data for n in manifest.provenance.recalibrations] == ["a.npy", "b.npy"]
    assert [n.from_version for n in manifest.provenance.recalibrations] == ["1", "2"]
    assert manifest.require_scoring().calibration.default_alpha == 0.1
    # From an explicit older version: the next free number, graphs of version 1.
    again = recalibrate(repo, model, rows, source="c.npy", version="1")
    assert again.version_dir.name == "4" and again.from_version == "1"


def test_too_few_rows_are_refused_in_the_export_wording_and_nothing_is_published(
    repo: Path,
) -> None:
    model = _model(repo)
    rows, _ = _shifted_normal_rows()
    with pytest.raises(ExportError) as err:
        recalibrate(repo, model, rows[:18], source="few.npy", default_alpha=ALPHA)
    assert str(err.value).startswith(
        "calibration has 18 rows: the smallest p-value is 1/19 > alpha 0.05, so nothing can be "
        "flagged at that alpha; it needs at least 19 rows"
    )
    assert sorted(p.name for p in (repo / model).iterdir()) == ["1"]


def test_rows_are_validated_like_score_validates_them(repo: Path) -> None:
    model = _model(repo)
    rows, _ = _shifted_normal_rows()
    with pytest.raises(InvalidInput, match=r"expected shape \(N, 64\)"):
        recalibrate(repo, model, rows[:, :60], source="narrow.npy")
    bad = rows.copy()
    bad[3, 5] = np.nan
    with pytest.raises(InvalidInput, match="NaN"):
        recalibrate(repo, model, bad, source="nan.npy")
    with pytest.raises(ExportError, match="no version '9'"):
        recalibrate(repo, model, rows, source="x.npy", version="9")
    assert sorted(p.name for p in (repo / model).iterdir()) == ["1"]


def test_served_after_a_restart_scores_equal_and_p_values_follow_the_new_calibration(
    repo: Path, serve: Callable[..., AbstractContextManager[str]]
) -> None:
    model = _model(repo)
    calibration_rows, held_out = _shifted_normal_rows()
    with serve(repo) as target, LatentwatchClient(target) as client:
        before = client.score(model, held_out, alpha=ALPHA)
    assert before.model_version == "1"
    old_rate = float(before.is_outlier.mean())
    assert old_rate > 3 * ALPHA  # the shift breaks the old calibration

    recalibrate(repo, model, calibration_rows, source="thin.npy")
    with serve(repo) as target, LatentwatchClient(target) as client:  # the restart
        old = client.score(model, held_out, version="1", kinds=("*",), alpha=ALPHA)
        new = client.score(model, held_out, kinds=("*",), alpha=ALPHA)
        on_calibration = client.score(model, calibration_rows, version="1", kinds=("*",))
        info = client.get_model(model, "2")
    assert new.model_version == "2"
    np.testing.assert_array_equal(new.score, old.score)
    for kind, values in old.scores.items():
        np.testing.assert_array_equal(new.scores[kind], values)
    new_rate = float(new.is_outlier.mean())
    assert abs(new_rate - ALPHA) < 0.025, (old_rate, new_rate)  # ~900 rows: sd 0.007
    assert info.calibration_size == len(calibration_rows)

    # The calibration holds exactly what the server scores for those rows.
    manifest = Manifest.read(repo / model / "2")
    calibration = np.load(repo / model / "2" / CALIBRATION_FILE)
    for i, kind in enumerate(manifest.require_scoring().calibration.score_kinds):
        np.testing.assert_allclose(calibration[:, i], on_calibration.scores[kind], rtol=1e-6)


def test_the_command_runs_without_torch(repo: Path, tmp_path: Path) -> None:
    model = _model(repo)
    rows, _ = _shifted_normal_rows()
    data = tmp_path / "thin.npy"
    np.save(data, rows)
    script = (
        "import sys\n"
        "from latentwatch.cli.main import main\n"
        "rc = main(sys.argv[1:])\n"
        "assert 'torch' not in sys.modules, 'recalibrate imported torch'\n"
        "sys.exit(rc)\n"
    )
    argv = ["recalibrate", "--repo", str(repo), "--model", model, "--data", str(data),
            "--max-rows", "500"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"as version 2: {repo / model / '2'}" in done.stdout
    assert Manifest.read(repo / model / "2").require_scoring().calibration.size == 500

    few = subprocess.run([sys.executable, "-c", script, *argv[:-1], "10"], capture_output=True,
                         text=True, env=env, timeout=120, cwd=tmp_path)
    assert few.returncode == 2
    assert "latentwatch recalibrate: error: calibration has 10 rows" in few.stderr
    assert not (repo / model / "3").exists()
    assert (repo / model / "2" / MANIFEST_FILE).is_file()


def test_named_rows_are_put_in_the_model_order_and_names_carried_over(repo: Path) -> None:
    model = _model(repo)
    v1 = repo / model / "1"
    names = [f"pixel_{i}" for i in range(64)]
    manifest = json.loads((v1 / MANIFEST_FILE).read_text())
    manifest["input"]["feature_names"] = names  # a model trained on a table with a header
    (v1 / MANIFEST_FILE).write_text(json.dumps(manifest))
    rows, _ = _shifted_normal_rows()

    by_position = recalibrate(repo, model, rows, source="thin.npy")
    reversed_rows = np.ascontiguousarray(rows[:, ::-1])
    by_name = recalibrate(repo, model, reversed_rows, source="thin.csv",
                          feature_names=names[::-1])
    np.testing.assert_array_equal(np.load(by_name.version_dir / CALIBRATION_FILE),
                                  np.load(by_position.version_dir / CALIBRATION_FILE))
    assert Manifest.read(by_name.version_dir).input.feature_names == names

    with pytest.raises(InvalidInput, match="missing 1: 'pixel_0'"):
        recalibrate(repo, model, rows, source="wrong.csv", feature_names=["x", *names[1:]])
