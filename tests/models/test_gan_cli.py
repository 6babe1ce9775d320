"""`latentwatch train --model gan|cgan|pix2pix`: each kind trains on digits in seconds, writes a
run directory with sample grids, and the flags of the other kind of training are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from latentwatch.cli.main import main as cli_main
from latentwatch.models.gan_checkpoint import load_gan_checkpoint
from latentwatch.models.run_dir import CHECKPOINT_FILE, sample_grid_path

TINY = ["--data", "digits", "--epochs", "1", "--max-rows", "128", "--batch-size", "32"]


@pytest.mark.parametrize("kind", ["gan", "cgan", "pix2pix"])
def test_cli_trains_each_kind(kind: str, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / kind
    assert cli_main(["train", "--model", kind, "--out", str(out), *TINY, "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"trained {kind} on digits: 115 train, 13 held-out rows" in printed
    assert "d_loss=" in printed and "run directory" in printed
    assert sample_grid_path(out, 1).read_bytes().startswith(b"\x89PNG")
    _, ckpt = load_gan_checkpoint(out)
    assert ckpt.kind == kind and ckpt.provenance["seed"] == 2


def test_cli_refuses_an_existing_run_directory_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["train", "--model", "gan", "--out", str(out), *TINY]
    assert cli_main(args) == 0
    trained = (out / CHECKPOINT_FILE).read_bytes()
    capsys.readouterr()
    assert cli_main(args) == 2
    assert "holds a training run; choose another directory, or overwrite it with --force" in (
        capsys.readouterr().err)
    assert (out / CHECKPOINT_FILE).read_bytes() == trained
    assert cli_main([*args, "--force", "--seed", "1"]) == 0
    assert (out / CHECKPOINT_FILE).read_bytes() != trained


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "gan", "--beta", "2"], "--beta: not for --model gan (an adversarial"),
        (["--model", "cgan", "--decoder", "gaussian"], "--decoder: not for --model cgan"),
        (["--model", "pix2pix", "--calibration-fraction", "0.3"], "--calibration-fraction"),
        (["--model", "gan", "--classifier"], "--classifier: not for --model gan"),
        (["--model", "vae", "--held-out-fraction", "0.2"],
         "--held-out-fraction: only with --model gan or cgan or pix2pix"),
        (["--model", "gan", "--hidden", "8,x"], "comma-separated integers"),
        (["--model", "gan", "--hidden", "8,16,32"], "two channel counts"),
        (["--model", "pix2pix", "--edge-threshold", "3"], "edge threshold must be in (0, 2)"),
        (["--model", "pix2pix", "--hidden", "8,16"], "pix2pix takes one channel count"),
        (["--model", "gan", "--max-rows", "2"], "adversarial training needs at least 2"),
    ],
)
def test_cli_refuses_flags_of_the_other_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    code = cli_main(["train", "--data", "digits", "--out", str(tmp_path / "run"), "--epochs",
                     "1", "--max-rows", "64", *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / CHECKPOINT_FILE).exists()
