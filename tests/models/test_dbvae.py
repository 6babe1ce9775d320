"""DB-VAE training: resampling by latent density, the classifier head, per-row weights."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from latentwatch.bias.density import effective_sample_size
from latentwatch.bias.options import BiasOptions
from latentwatch.cli.main import main as cli_main
from latentwatch.data import load_source
from latentwatch.models import load_checkpoint, preprocess
from latentwatch.models.checkpoint import load_classifier
from latentwatch.models.dbvae import encoder_means, epoch_sample
from latentwatch.models.training import TrainConfig, run_training
from latentwatch.repository.manifest import Manifest

# Small conv channels keep these runs to a second or two.
FAST = ["--hidden", "8,16"]


def _train(out: Path, *flags: str, data: str = "digits", model: str = "dbvae") -> int:
    return cli_main(["train", "--data", data, "--model", model, "--out", str(out), *flags])


def _read_weights(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=np.float64)


def test_dbvae_run_writes_weights_records_ess_trains_the_head_and_exports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert _train(run_dir, "--epochs", "8", "--classifier", "--seed", "0") == 0
    out = capsys.readouterr().out
    assert "sample weights" in out and str(run_dir / "sample_weights.csv") in out

    header, table = _read_weights(run_dir / "sample_weights.csv")
    assert header == ["row", "weight", "log_density"]
    with np.load(run_dir / "splits.npz", allow_pickle=False) as splits:
        train_rows, val_rows = splits["train"], splits["validation"]
    np.testing.assert_array_equal(table[:, 0].astype(np.int64), train_rows)
    weight = table[:, 1]
    assert np.isfinite(table).all() and (weight > 0).all()
    assert weight.mean() == pytest.approx(1.0, rel=1e-9)
    assert weight.std() > 0.1  # not uniform: sparse rows weigh more

    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = metrics["history"]
    n_train = len(train_rows)
    assert [h["resampled"] for h in history] == [False] + [True] * 7  # one warm-up epoch
    assert history[0]["ess"] == n_train
    assert all(0 < h["ess"] < n_train for h in history[1:])
    assert metrics["effective_sample_size"] == pytest.approx(
        effective_sample_size(np.log(weight)), rel=1e-9
    )
    # The head learned the digit classes (chance is 0.1), and the checkpoint kept it.
    best = next(h for h in history if h["epoch"] == metrics["best_epoch"])
    assert best["val_accuracy"] > 0.5
    model, checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    assert checkpoint.config.kind == "dbvae"
    assert checkpoint.debias["mode"] == metrics["train_config"]["debias_mode"]
    head = load_classifier(run_dir / "checkpoint.pt")
    assert head is not None and head.config.classes == tuple(range(10))
    digits = load_source("digits")
    assert digits.y is not None
    x_val = torch.from_numpy(preprocess(digits.X[val_rows], checkpoint.preprocessing))
    with torch.no_grad():
        predicted = head(torch.from_numpy(encoder_means(model, x_val)).float()).argmax(dim=-1)
    accuracy = float((predicted.numpy() == digits.y[val_rows]).mean())
    assert accuracy == pytest.approx(best["val_accuracy"], abs=1e-6)

    repo = tmp_path / "repo"
    assert cli_main(["export", str(run_dir), "--repo", str(repo), "--name", "digits-dbvae"]) == 0
    manifest = Manifest.read(repo / "digits-dbvae" / "1")
    assert manifest.model_kind == "dbvae"
    assert {"scorer", "encoder", "decoder"} <= set(manifest.graphs)
    assert "neg_elbo" in manifest.scoring.score_kinds


def _inverted_rare_rows(tmp_path: Path, n_rare: int) -> tuple[Path, np.ndarray]:
    """Digits where a few images are inverted (16 - x): a rare kind of row the encoder must place
    apart from the rest. (A rare digit class is not enough: on digits a VAE gives a class kept
    to ten rows no sparser a latent region than the others.)"""
    digits = load_source("digits")
    assert digits.y is not None
    x = digits.X.copy()
    rare = np.zeros(len(x), dtype=bool)
    rare[np.random.default_rng(0).choice(len(x), n_rare, replace=False)] = True
    x[rare] = 16.0 - x[rare]
    path = tmp_path / "rare.npz"
    np.savez(path, X=x.reshape(-1, 8, 8), y=digits.y)
    return path, rare


@pytest.mark.parametrize("mode", ["max", "paper", "knn"])
def test_rows_in_sparse_latent_regions_are_drawn_more_often(tmp_path: Path, mode: str) -> None:
    data, rare_all = _inverted_rare_rows(tmp_path, n_rare=12)
    run = run_training(TrainConfig(data=str(data), model="dbvae", out=tmp_path / "run",
                                   hidden=(8, 16), epochs=4, progress=False, debias_mode=mode))
    model, checkpoint = load_checkpoint(run.run_dir / "checkpoint.pt")
    with np.load(run.run_dir / "splits.npz", allow_pickle=False) as splits:
        train_rows = splits["train"]
    x = torch.from_numpy(preprocess(load_source(str(data)).X[train_rows],
                                    checkpoint.preprocessing))
    rare = rare_all[train_rows]
    n = len(train_rows)
    sample = epoch_sample(model, x, BiasOptions(mode=mode), n_draws=n, seed=3)
    assert sample.rows.shape == (n,) and sample.probability.sum() == pytest.approx(1.0)
    # Uniform sampling gives each row 1/n; the rare rows get several times that.
    assert sample.probability[rare].mean() > 5.0 / n
    assert np.isin(sample.rows, np.flatnonzero(rare)).mean() > 5.0 * rare.mean()
    again = epoch_sample(model, x, BiasOptions(mode=mode), n_draws=n, seed=3)
    np.testing.assert_array_equal(again.rows, sample.rows)


def test_same_seed_gives_identical_weights_and_checkpoint(tmp_path: Path) -> None:
    runs = [tmp_path / name for name in ("a", "b", "c")]
    for run_dir, seed in zip(runs, ("0", "0", "1"), strict=True):
        assert _train(run_dir, *FAST, "--epochs", "3", "--seed", seed) == 0
    weights = [(r / "sample_weights.csv").read_bytes() for r in runs]
    assert weights[0] == weights[1]
    assert weights[0] != weights[2]
    states = [load_checkpoint(r / "checkpoint.pt")[0].state_dict() for r in runs[:2]]
    for name, tensor in states[0].items():
        torch.testing.assert_close(states[1][name], tensor, rtol=0, atol=0, msg=name)


def test_classifier_needs_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "rows.npy", load_source("digits").X[:300])
    assert _train(tmp_path / "run", "--classifier", data=str(tmp_path / "rows.npy")) == 2
    err = capsys.readouterr().err
    assert "--classifier needs class labels" in err and "rows.npy" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    "flags",
    [["--debias-bins", "5"], ["--debias-mode", "paper"], ["--debias-alpha", "0.01"],
     ["--debias-warmup-epochs", "2"], ["--classifier"], ["--classifier-weight", "2"]],
)
def test_dbvae_flags_need_model_dbvae(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    assert _train(tmp_path / "run", *flags, model="vae") == 2
    err = capsys.readouterr().err
    assert f"{flags[0]}: only with --model dbvae (got --model vae)" in err
    with pytest.raises(ValueError, match="only for model 'dbvae'"):
        TrainConfig(data="digits", model="vae", out=tmp_path, debias_mode="paper")


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--debias-bins", "1"], "bins"), (["--debias-alpha", "-1"], "alpha"),
     (["--debias-warmup-epochs", "-1"], "debias_warmup_epochs"),
     (["--classifier-weight", "0"], "classifier_weight")],
)
def test_bad_dbvae_values_are_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert _train(tmp_path / "run", *flags) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
