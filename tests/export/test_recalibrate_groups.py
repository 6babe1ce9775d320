"""Group-conditional (Mondrian) calibration: `latentwatch recalibrate --group-column` keeps each
calibration row's group, and Score with `groups` compares each row with its own group only.

Two groups of one real exported model's data, one much harder (noisier) than the other: over
a real server, marginal p-values give the easy group almost no false alarms and the hard one
far too many; group-conditional p-values give each group alpha.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from latentwatch.cli.main import main
from latentwatch.client.client import LatentwatchClient
from latentwatch.errors import InvalidInput
from latentwatch.export.errors import ExportError
from latentwatch.export.recalibrate import recalibrate
from latentwatch.repository.manifest import Manifest
from latentwatch.repository.manifest_groups import CALIBRATION_GROUPS_FILE
from latentwatch.repository.reader import read_version

KIND = "beta-vae"
ALPHA = 0.05
ROWS_PER_GROUP = 3000  # false-alarm rate of one group: sd sqrt(0.05 * 0.95 / 3000) = 0.004


def _digits() -> NDArray[np.float32]:
    from sklearn.datasets import load_digits

    return np.asarray(load_digits().data, dtype=np.float32)


def _two_groups(seed: int) -> tuple[NDArray[np.float32], NDArray[np.str_]]:
    """ROWS_PER_GROUP rows of each group, shuffled: "clean" (faint jitter) and "noisy" (strong
    noise, which the model finds more unusual). Rows of one group are exchangeable."""
    rng = np.random.default_rng(seed)
    X = _digits()
    parts, labels = [], []
    for name, noise in (("clean", 0.3), ("noisy", 6.0)):
        picked = X[rng.integers(0, len(X), ROWS_PER_GROUP)]
        parts.append(np.clip(picked + rng.normal(0, noise, picked.shape), 0, 16))
        labels += [name] * ROWS_PER_GROUP
    order = rng.permutation(2 * ROWS_PER_GROUP)
    return np.concatenate(parts).astype(np.float32)[order], np.array(labels)[order]


@pytest.fixture
def repo(exported: dict, tmp_path: Path) -> Path:
    source = exported[KIND].version_dir
    repo = tmp_path / "repo"
    shutil.copytree(source, repo / source.parent.name / "1")
    return repo


def _model(repo: Path) -> str:
    (model,) = [p.name for p in repo.iterdir()]
    return model


def _rates(result_flags: NDArray[np.bool_], groups: NDArray[np.str_]) -> dict[str, float]:
    return {g: float(result_flags[groups == g].mean()) for g in ("clean", "noisy")}


def test_group_conditional_p_values_hold_alpha_in_each_group_over_a_real_server(
    repo: Path, serve: Callable[..., AbstractContextManager[str]]
) -> None:
    model = _model(repo)
    calibration_rows, calibration_groups = _two_groups(seed=1)
    test_rows, test_groups = _two_groups(seed=2)
    done = recalibrate(repo, model, calibration_rows, source="sites.csv",
                       groups=calibration_groups.tolist(), group_column="site")

    spec = Manifest.read(done.version_dir).require_scoring().calibration.groups
    assert spec is not None
    assert (spec.column, spec.groups, spec.sizes) == ("site", ["clean", "noisy"],
                                                       [ROWS_PER_GROUP, ROWS_PER_GROUP])
    stored = np.load(done.version_dir / CALIBRATION_GROUPS_FILE, allow_pickle=False)
    assert stored.dtype.kind == "U" and stored.tolist() == calibration_groups.tolist()

    with serve(repo) as target, LatentwatchClient(target) as client:
        info = client.get_model(model)
        marginal = client.score(model, test_rows, alpha=ALPHA)
        grouped = client.score(model, test_rows, alpha=ALPHA, groups=test_groups.tolist())
        streamed = client.score(model, test_rows, alpha=ALPHA, groups=test_groups.tolist(),
                                batch_rows=1000)
        old = client.get_model(model, "1")
    assert (info.calibration_group_column, info.calibration_groups) == ("site",
                                                                       ("clean", "noisy"))
    assert (old.calibration_group_column, old.calibration_groups) == ("", ())
    assert not marginal.group_conditional and grouped.group_conditional
    np.testing.assert_array_equal(grouped.score, marginal.score)

    marginal_rates = _rates(marginal.is_outlier, test_groups)
    grouped_rates = _rates(grouped.is_outlier, test_groups)
    print(f"alpha {ALPHA}: marginal {marginal_rates}, group-conditional {grouped_rates}")
    assert marginal_rates["clean"] < ALPHA / 2 and marginal_rates["noisy"] > 1.5 * ALPHA
    for rate in grouped_rates.values():
        assert abs(rate - ALPHA) <= 0.02

    # Each row's p-value is its conformal p-value against its own group's calibration scores.
    calibration = np.load(done.version_dir / "calibration.npy")
    kinds = Manifest.read(done.version_dir).require_scoring().calibration.score_kinds
    column = calibration[:, kinds.index(grouped.score_kind)]
    for i in range(0, len(test_rows), 397):
        own = column[calibration_groups == test_groups[i]]
        expected = (1 + np.count_nonzero(own >= grouped.score[i])) / (len(own) + 1)
        assert grouped.p_value[i] == pytest.approx(expected, rel=1e-12)
    np.testing.assert_array_equal(streamed.p_value, grouped.p_value)
    assert streamed.group_conditional


def test_bad_groups_are_refused_clearly_and_the_server_keeps_serving(
    repo: Path, serve: Callable[..., AbstractContextManager[str]]
) -> None:
    model = _model(repo)
    rows, groups = _two_groups(seed=3)
    recalibrate(repo, model, rows, source="sites.csv", groups=groups.tolist(),
                group_column="site")
    few = rows[:4]
    with serve(repo) as target, LatentwatchClient(target) as client:
        with pytest.raises(InvalidInput, match=r"unknown group\(s\) 'elsewhere'.*has 'clean', "
                                               "'noisy'"):
            client.score(model, few, groups=["clean", "elsewhere", "noisy", "clean"])
        with pytest.raises(InvalidInput, match="3 given for 4 rows; send one per row"):
            client.score(model, few, groups=["clean", "noisy", "clean"])
        with pytest.raises(InvalidInput, match="calibrated without a group column"):
            client.score(model, few, version="1", groups=["clean"] * 4)
        assert client.score(model, few, groups=["noisy"] * 4).group_conditional


def test_groups_are_checked_at_recalibration(repo: Path) -> None:
    model = _model(repo)
    rows, groups = _two_groups(seed=4)
    with pytest.raises(ExportError, match=r"5 groups for 6000 rows"):
        recalibrate(repo, model, rows, source="x", groups=["a"] * 5, group_column="site")
    few = groups.copy()
    few[:10] = "rare"  # 10 rows cannot resolve alpha 0.05 (it needs 19)
    with pytest.raises(ExportError, match=r"group 'rare': calibration has 10 rows"):
        recalibrate(repo, model, rows, source="x", groups=few.tolist(), group_column="site")
    assert sorted(p.name for p in (repo / model).iterdir()) == ["1"]
    # A grouped version recalibrated without groups drops them.
    recalibrate(repo, model, rows, source="x", groups=groups.tolist(), group_column="site")
    plain = recalibrate(repo, model, rows, source="y")
    assert Manifest.read(plain.version_dir).require_scoring().calibration.groups is None
    assert not (plain.version_dir / CALIBRATION_GROUPS_FILE).exists()
    assert read_version(model, plain.version_dir.name, plain.version_dir).group_calibration == {}


def test_the_cli_recalibrates_and_scores_with_a_group_column(
    repo: Path, tmp_path: Path, serve: Callable[..., AbstractContextManager[str]]
) -> None:
    model = _model(repo)
    rows, groups = _two_groups(seed=5)
    data = tmp_path / "sites.csv"
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        names = [f"pixel_{i}" for i in range(rows.shape[1])]
        writer.writerow([*names[:10], "site", *names[10:]])  # the group column among features
        for row, group in zip(rows.tolist(), groups.tolist(), strict=True):
            writer.writerow([*map(repr, row[:10]), group, *map(repr, row[10:])])
    assert main(["recalibrate", "--repo", str(repo), "--model", model, "--data", str(data),
                 "--group-column", "site"]) == 0
    out = tmp_path / "scored.csv"
    with serve(repo) as target, LatentwatchClient(target) as client:
        assert main(["score", "--server", target, "--model", model, "--data", str(data),
                     "--out", str(out), "--group-column", "site", "--batch-rows", "700"]) == 0
        expected = client.score(model, rows, groups=groups.tolist())
    with out.open(newline="") as f:
        written = list(csv.DictReader(f))
    p = np.array([float(r["p_value"]) for r in written])
    np.testing.assert_array_equal(p, expected.p_value)
    assert expected.group_conditional
