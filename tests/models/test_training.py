"""Training end to end: run directory, held-out calibration rows, reproducibility, quality floor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from latentwatch.cli.main import main as cli_main
from latentwatch.data import load_source
from latentwatch.models import kl_divergence, load_checkpoint, preprocess
from latentwatch.models.training import TrainConfig, TrainingError, train


def _low_rank_rows(n: int, seed: int) -> np.ndarray:
    """Rows on a noisy 2-D plane inside 8-D space, with a feature offset and scale."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).normal(size=(2, 8))
    rows = rng.normal(size=(n, 2)) @ mixing + 0.1 * rng.normal(size=(n, 8))
    return (3.0 * rows + 10.0).astype(np.float32)


def _auroc(normal_scores: np.ndarray, anomaly_scores: np.ndarray) -> float:
    """Probability that an anomaly outscores a normal row (ties count half), by ranks."""
    scores = np.concatenate([normal_scores, anomaly_scores])
    order = scores.argsort()
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks over ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_a, n_n = len(anomaly_scores), len(normal_scores)
    return float((ranks[n_n:].sum() - n_a * (n_a + 1) / 2) / (n_a * n_n))


def test_auroc_helper_is_a_rank_statistic() -> None:
    assert _auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert _auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert _auroc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5


def test_digits_run_dir_holds_out_calibration_rows(tmp_path: Path) -> None:
    run_dir = train(TrainConfig(data="digits", model="vae", out=tmp_path / "run", epochs=2,
                                progress=False))
    assert run_dir == tmp_path / "run"
    digits = load_source("digits")
    with np.load(run_dir / "splits.npz", allow_pickle=False) as splits:
        train_idx, val_idx, cal_idx = splits["train"], splits["validation"], splits["calibration"]
    assert len(cal_idx) == round(0.2 * 1797) and len(val_idx) == round(0.1 * 1797)
    every = np.concatenate([train_idx, val_idx, cal_idx])
    assert len(np.unique(every)) == len(every) == 1797  # disjoint and covering
    cal_rows = np.load(run_dir / "calibration_rows.npy", allow_pickle=False)
    assert cal_rows.dtype == np.float32
    np.testing.assert_array_equal(cal_rows, digits.X[cal_idx])  # raw, as loaded

    model, ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert not model.training
    assert ckpt.config.kind == "vae" and ckpt.config.body == "conv"
    assert ckpt.config.decoder == "bernoulli" and ckpt.image_shape == (1, 8, 8)
    assert ckpt.preprocessing["kind"] == "scale" and ckpt.preprocessing["clip"] == [0.0, 1.0]
    np.testing.assert_allclose(ckpt.preprocessing["scale"], [1 / 16] * 64)
    prov = ckpt.provenance
    assert (prov["n_train"], prov["n_validation"]) == (len(train_idx), len(val_idx))
    assert prov["epochs"] == 2 and prov["data"] == "digits"
    assert prov["trained_at"].endswith("+00:00")
    assert ckpt.split["n_calibration"] == len(cal_idx)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2] == [h["epoch"] for h in ckpt.history]
    for entry in metrics["history"]:
        assert entry["train_loss"] == pytest.approx(entry["train_recon"] + entry["train_kl"])
        assert entry["val_loss"] > 0
    assert metrics["final_losses"] == prov["final_losses"]


def test_same_seed_gives_identical_weights(tmp_path: Path) -> None:
    np.save(tmp_path / "rows.npy", _low_rank_rows(300, seed=0))
    was_deterministic = torch.are_deterministic_algorithms_enabled()

    def weights(seed: int, name: str) -> dict[str, torch.Tensor]:
        run = train(TrainConfig(data=str(tmp_path / "rows.npy"), model="vae", out=tmp_path / name,
                                epochs=3, seed=seed, progress=False))
        return load_checkpoint(run / "checkpoint.pt")[0].state_dict()

    first, second, other = weights(7, "a"), weights(7, "b"), weights(8, "c")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    assert torch.are_deterministic_algorithms_enabled() == was_deterministic  # restored


def test_without_a_validation_split_the_last_epoch_is_kept(tmp_path: Path) -> None:
    np.save(tmp_path / "rows.npy", _low_rank_rows(100, seed=6))
    run = train(TrainConfig(data=str(tmp_path / "rows.npy"), model="vae", out=tmp_path / "run",
                            epochs=3, validation_fraction=0.0, progress=False))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_epoch"] == 3 and len(metrics["history"]) == 3
    assert metrics["history"][-1]["val_loss"] is None
    assert set(metrics["final_losses"]) == {"train_loss", "train_recon", "train_kl"}
    assert metrics["split"]["n_validation"] == 0


def test_diverging_training_fails_clearly(tmp_path: Path) -> None:
    np.save(tmp_path / "rows.npy", _low_rank_rows(100, seed=7))
    with pytest.raises(TrainingError, match="diverged at epoch 1"):
        train(TrainConfig(data=str(tmp_path / "rows.npy"), model="vae", out=tmp_path / "run",
                          epochs=3, lr=1e30, progress=False))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_tabular_rows_are_standardised_with_training_statistics(tmp_path: Path) -> None:
    rows = _low_rank_rows(200, seed=1)
    rows[:, 3] = 5.0  # a constant feature must not divide by zero
    np.save(tmp_path / "rows.npy", rows)
    run = train(TrainConfig(data=str(tmp_path / "rows.npy"), model="ae", out=tmp_path / "run",
                            epochs=1, progress=False))
    _, ckpt = load_checkpoint(run / "checkpoint.pt")
    with np.load(run / "splits.npz", allow_pickle=False) as splits:
        train_rows = rows[splits["train"]]
    assert ckpt.config.body == "mlp" and ckpt.config.decoder == "gaussian"
    assert ckpt.preprocessing["kind"] == "standardize" and ckpt.preprocessing["clip"] is None
    np.testing.assert_allclose(ckpt.preprocessing["shift"], train_rows.mean(0), rtol=1e-5)
    standardised = preprocess(train_rows, ckpt.preprocessing)
    assert np.isfinite(standardised).all()
    np.testing.assert_allclose(np.delete(standardised.std(0), 3), 1.0, rtol=1e-3)


def test_vae_ranks_off_manifold_rows_above_normal_rows(tmp_path: Path) -> None:
    """Quality floor: anomalies share the normal rows' per-feature spread but not their
    low-rank structure, so only a model of the joint distribution separates them."""
    normal = _low_rank_rows(1000, seed=2)
    np.save(tmp_path / "normal.npy", normal)
    run = train(TrainConfig(data=str(tmp_path / "normal.npy"), model="vae", out=tmp_path / "run",
                            epochs=25, seed=0, progress=False))
    model, ckpt = load_checkpoint(run / "checkpoint.pt")
    rng = np.random.default_rng(3)
    test_normal = _low_rank_rows(200, seed=4)
    anomalies = (rng.normal(size=(50, 8)) * normal.std(0) + normal.mean(0)).astype(np.float32)

    def negative_elbo(rows: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(preprocess(rows, ckpt.preprocessing))
        with torch.no_grad():
            mu, logvar = model.encode(x)
            assert logvar is not None
            eps = torch.randn(16, *mu.shape, generator=torch.Generator().manual_seed(0))
            z = mu + torch.exp(0.5 * logvar) * eps  # (K, B, Z)
            recon = -model.log_px(x, model.decode(z)).mean(0)
            return (recon + kl_divergence(mu, logvar)).numpy()

    auroc = _auroc(negative_elbo(test_normal), negative_elbo(anomalies))
    assert auroc >= 0.9, f"AUROC {auroc:.3f} below the 0.9 floor"


def test_cli_train_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = tmp_path / "rows.csv"
    rows = _low_rank_rows(120, seed=5)
    csv_path.write_text("\n".join(",".join(f"{v:.5f}" for v in row) for row in rows) + "\n")
    code = cli_main(["train", "--data", str(csv_path), "--model", "beta-vae", "--out",
                     str(tmp_path / "run"), "--epochs", "2", "--hidden", "16,8",
                     "--latent-dim", "3", "--calibration-fraction", "0.25"])
    assert code == 0
    out = capsys.readouterr().out
    assert "beta 2" in out and "run directory" in out and "30 calibration" in out
    _, ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt.config.hidden == (16, 8) and ckpt.config.latent_dim == 3 and ckpt.config.beta == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "vae", "--beta", "2"], "requires beta 1.0"),
        (["--model", "ae", "--hidden", "16,x"], "comma-separated integers"),
        (["--model", "ae", "--calibration-fraction", "1.5"],
         "argument --calibration-fraction: expected a number in (0, 1), got '1.5'"),
        (["--model", "ae", "--epochs", "0"], "argument --epochs: expected an integer >= 1"),
        (["--model", "ae", "--epochs", "-3"], "argument --epochs: expected an integer >= 1"),
    ],
)
def test_cli_train_rejects_bad_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    code = cli_main(["train", "--data", "digits", "--out", str(tmp_path / "run"), *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_train_refuses_an_existing_run_directory_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", "digits", "--model", "ae", "--out", str(out), "--epochs", "1",
            "--max-rows", "200", "--hidden", "16", "--latent-dim", "2"]
    assert cli_main(args) == 0
    trained = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert cli_main([*args[:-2], "--latent-dim", "3"]) == 2
    err = capsys.readouterr().err
    assert err == (f"latentwatch train: error: {out}: holds a training run; choose another "
                   "directory, or overwrite it with --force\n")
    assert (out / "checkpoint.pt").read_bytes() == trained  # untouched
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert cli_main([*args[:6], str(tmp_path / "other"), *args[7:]]) == 2
    assert "other: is not empty; choose another directory" in capsys.readouterr().err
    assert cli_main([*args[:-2], "--latent-dim", "3", "--force"]) == 0
    _, ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt.config.latent_dim == 3
