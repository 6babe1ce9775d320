"""What one benchmarks/quality.py run does: caps, seeds, epochs; --quick's and the defaults."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from quality_baselines import DEFAULT_PYOD_VAE_EPOCHS

from latentwatch.models.defaults import TABULAR_IMPORTANCE_SAMPLES

# Defaults sized so that 29 sets x 3 seeds, all methods and both image pairs fit 45 minutes on
# 2 shared cores (see the timings in the JSON); --quick shrinks everything for smoke tests.
DEFAULT_MAX_TRAIN_ROWS = 10_000
DEFAULT_MAX_TEST_ROWS = 10_000
DEFAULT_IMAGE_EPOCHS = 10
DEFAULT_N_IMPORTANCE_SAMPLES = TABULAR_IMPORTANCE_SAMPLES  # `latentwatch train`'s K for tables
QUICK = {"seeds": 1, "n_datasets": 3, "max_train_rows": 2000, "max_test_rows": 2000,
         "epochs": 10, "pyod_vae_epochs": 2, "max_image_train_rows": 2000,
         "max_image_test_rows": 1000, "image_epochs": 1}


@dataclass(frozen=True)
class Settings:
    seeds: tuple[int, ...]
    max_train_rows: int | None
    max_test_rows: int | None
    epochs: int | None  # latentwatch's training epochs (None: TrainConfig's default)
    pyod_vae_epochs: int
    baselines: tuple[str, ...]  # empty when PyOD is not installed
    max_image_train_rows: int | None
    max_image_test_rows: int | None
    image_epochs: int | None
    n_importance_samples: int = DEFAULT_N_IMPORTANCE_SAMPLES  # K draws the scorer decodes


def _optional_cap(value: int) -> int | None:
    return None if value <= 0 else value


def resolve_settings(args: argparse.Namespace, baselines: tuple[str, ...]) -> Settings:
    """Flags over --quick's values over the full run's defaults."""
    quick = args.quick

    def pick(flag: Any, quick_value: Any, default: Any) -> Any:
        return flag if flag is not None else (quick_value if quick else default)

    n_seeds = pick(args.seeds, QUICK["seeds"], 3)
    if n_seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    train_cap = pick(args.max_train_rows, QUICK["max_train_rows"], DEFAULT_MAX_TRAIN_ROWS)
    test_cap = pick(args.max_test_rows, QUICK["max_test_rows"], DEFAULT_MAX_TEST_ROWS)
    image_train_cap = pick(args.max_image_train_rows, QUICK["max_image_train_rows"], 0)
    image_test_cap = pick(args.max_image_test_rows, QUICK["max_image_test_rows"], 0)
    return Settings(
        seeds=tuple(range(n_seeds)),
        max_train_rows=_optional_cap(train_cap),
        max_test_rows=_optional_cap(test_cap),
        epochs=pick(args.epochs, QUICK["epochs"], None),
        pyod_vae_epochs=pick(args.pyod_vae_epochs, QUICK["pyod_vae_epochs"],
                             DEFAULT_PYOD_VAE_EPOCHS),
        baselines=baselines,
        max_image_train_rows=_optional_cap(image_train_cap),
        max_image_test_rows=_optional_cap(image_test_cap),
        image_epochs=pick(args.image_epochs, QUICK["image_epochs"], DEFAULT_IMAGE_EPOCHS),
        n_importance_samples=_positive(args.n_importance_samples),
    )


def _positive(k: int) -> int:
    if k < 1:
        raise SystemExit("--n-importance-samples must be >= 1")
    return k
