"""Training schedule defaults: tabular epochs follow a step budget, user values always win."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from latentwatch.cli.main import main as cli_main
from latentwatch.cli.train import config_from_args
from latentwatch.models.defaults import (
    IMAGE_BATCH_SIZE,
    IMAGE_EPOCHS,
    IMAGE_PATIENCE,
    TABULAR_MAX_EPOCHS,
    TABULAR_MIN_EPOCHS,
    TABULAR_PATIENCE_STEPS,
    TABULAR_STEP_BUDGET,
    default_tabular_batch_size,
    resolve_schedule,
)
from latentwatch.models.training import TrainConfig, run_training


@pytest.mark.parametrize(
    ("n_train", "batch"),
    [(1, 64), (140, 64), (3500, 64), (6000, 128), (11000, 128), (12000, 256), (35000, 256),
     (10**7, 256)],
)
def test_tabular_batch_size_grows_with_rows_within_64_to_256(n_train: int, batch: int) -> None:
    assert default_tabular_batch_size(n_train) == batch


@pytest.mark.parametrize("n_train", [140, 700, 3500, 35000])
def test_tabular_epochs_reach_the_step_budget(n_train: int) -> None:
    schedule = resolve_schedule(n_train, is_image=False)
    steps = schedule.steps_per_epoch
    assert steps == math.ceil(n_train / schedule.batch_size)
    assert TABULAR_MIN_EPOCHS <= schedule.epochs <= TABULAR_MAX_EPOCHS
    if TABULAR_MIN_EPOCHS < schedule.epochs < TABULAR_MAX_EPOCHS:
        # Within one epoch of the budget, never short of it.
        assert TABULAR_STEP_BUDGET <= schedule.max_steps < TABULAR_STEP_BUDGET + steps
    # Patience is a step count too, but at least 5 epochs.
    assert schedule.patience == max(5, math.ceil(TABULAR_PATIENCE_STEPS / steps))
    assert schedule.auto == ("epochs", "batch_size", "patience")


def test_a_small_table_gets_many_epochs_and_a_large_one_few() -> None:
    small = resolve_schedule(140, is_image=False)  # a 200-row file after the default splits
    large = resolve_schedule(35000, is_image=False)  # a 50,000-row file
    assert small.epochs >= 500 and small.batch_size == 64 and small.patience >= 100
    assert large.epochs <= 50 and large.batch_size == 256 and large.patience <= 10
    # Both reach about the same number of optimiser steps; 30 epochs would have given 90.
    assert small.max_steps >= 1500 and large.max_steps >= TABULAR_STEP_BUDGET


def test_tiny_tables_are_capped_and_huge_ones_still_get_several_epochs() -> None:
    assert resolve_schedule(10, is_image=False).epochs == TABULAR_MAX_EPOCHS
    assert resolve_schedule(10**7, is_image=False).epochs == TABULAR_MIN_EPOCHS


@pytest.mark.parametrize("n_train", [1258, 42000])  # digits, MNIST
def test_images_keep_their_fixed_defaults(n_train: int) -> None:
    schedule = resolve_schedule(n_train, is_image=True)
    assert (schedule.epochs, schedule.batch_size, schedule.patience) == (
        IMAGE_EPOCHS, IMAGE_BATCH_SIZE, IMAGE_PATIENCE
    ) == (30, 64, 5)


@pytest.mark.parametrize("is_image", [False, True])
def test_explicit_values_win(is_image: bool) -> None:
    schedule = resolve_schedule(140, is_image, epochs=7, batch_size=16, patience=2)
    assert (schedule.epochs, schedule.batch_size, schedule.patience) == (7, 16, 2)
    assert schedule.steps_per_epoch == 9 and schedule.auto == ()
    only_epochs = resolve_schedule(140, is_image, epochs=7)
    assert only_epochs.epochs == 7 and only_epochs.auto == ("batch_size", "patience")
    # The batch size given decides the steps per epoch, and so the epochs from the budget.
    if not is_image:
        assert resolve_schedule(140, False, batch_size=16).epochs == math.ceil(
            TABULAR_STEP_BUDGET / 9
        )


def test_train_config_leaves_unset_values_to_the_data() -> None:
    config = TrainConfig(data="digits", model="vae", out=Path("run"))
    assert config.epochs is None and config.batch_size is None and config.patience is None
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(data="digits", model="vae", out=Path("run"), epochs=0)


def _parsed(flags: list[str]) -> TrainConfig:
    import argparse

    from latentwatch.cli.main import build_parser

    args = build_parser().parse_args(["train", "--data", "x.csv", "--model", "vae", "--out", "r",
                                      *flags])
    assert isinstance(args, argparse.Namespace)
    return config_from_args(args)


def test_cli_flags_map_none_to_auto_and_keep_explicit_values() -> None:
    auto = _parsed([])
    assert (auto.epochs, auto.batch_size, auto.patience) == (None, None, None)
    given = _parsed(["--epochs", "12", "--batch-size", "32"])
    assert (given.epochs, given.batch_size) == (12, 32)


def _rows(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    mixing = np.random.default_rng(99).normal(size=(2, 8))
    return (rng.normal(size=(n, 2)) @ mixing + 0.1 * rng.normal(size=(n, 8))).astype(np.float32)


def test_a_200_row_table_trains_for_hundreds_of_steps_by_default(tmp_path: Path) -> None:
    np.save(tmp_path / "rows.npy", _rows(200))
    result = run_training(TrainConfig(data=str(tmp_path / "rows.npy"), model="vae",
                                      out=tmp_path / "run", progress=False))
    schedule = result.schedule
    assert schedule.auto == ("epochs", "batch_size", "patience") and schedule.epochs >= 500
    # Far past the 30 epochs (90 steps) of a fixed default, unless early stopping ended it.
    assert result.epochs_run * schedule.steps_per_epoch >= TABULAR_PATIENCE_STEPS
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["schedule"]["epochs"] == schedule.epochs
    assert metrics["stopped_early"] == (result.epochs_run < schedule.epochs)
    assert len(metrics["history"]) == result.epochs_run


def test_explicit_epochs_win_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "rows.npy", _rows(200))
    code = cli_main(["train", "--data", str(tmp_path / "rows.npy"), "--model", "vae", "--out",
                     str(tmp_path / "run"), "--epochs", "3", "--batch-size", "16"])
    assert code == 0
    assert "epochs: 3 of at most 3" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["history"]) == 3
    assert metrics["schedule"]["batch_size"] == 16 and metrics["schedule"]["auto"] == ["patience"]
