"""`latentwatch train`: the flags -> TrainConfig -> models.training.run_training -> a summary.

Imports torch (through latentwatch.models): main.py imports this module only for `train`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from latentwatch.errors import InvalidInput
from latentwatch.families import family, kinds_where
from latentwatch.models.training import TrainConfig, run_training


def _parse_hidden(text: str | None) -> tuple[int, ...] | None:
    if text is None or not text.strip():
        return None
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InvalidInput(f"--hidden: expected comma-separated integers, got {text!r}") from None
    return widths


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from the `latentwatch train` flags; None (or 'auto') keeps the default."""
    given = {
        "hidden": _parse_hidden(getattr(args, "hidden", None)),
        "latent_dim": args.latent_dim,
        "beta": args.beta,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "n_importance_samples": args.n_importance_samples,
        "calibration_fraction": args.calibration_fraction,
        "validation_fraction": args.validation_fraction,
        "max_rows": args.max_rows,
        "seed": args.seed,
    }
    # DB-VAE flags default to None, so that giving one with another model is an error.
    dbvae = {
        "debias_bins": getattr(args, "debias_bins", None),
        "debias_alpha": getattr(args, "debias_alpha", None),
        "debias_mode": getattr(args, "debias_mode", None),
        "debias_warmup_epochs": getattr(args, "debias_warmup_epochs", None),
        "classifier": getattr(args, "classifier", None) or None,
        "classifier_weight": getattr(args, "classifier_weight", None),
    }
    dbvae = {k: v for k, v in dbvae.items() if v is not None}
    if dbvae and not family(args.model).resamples:
        flags = ", ".join("--" + name.replace("_", "-") for name in dbvae)
        only = " or ".join(kinds_where(resampling="latent-density"))
        raise InvalidInput(f"{flags}: only with --model {only} (got --model {args.model})")
    given |= dbvae
    try:
        return TrainConfig(
            data=args.data,
            model=args.model,
            out=Path(args.out),
            body=args.body or "auto",
            decoder=args.decoder or "auto",
            **{k: v for k, v in given.items() if v is not None},
        )
    except ValueError as err:
        raise InvalidInput(str(err)) from err


def run(args: argparse.Namespace) -> None:
    """Train, then print a short summary."""
    config = config_from_args(args)
    try:
        result = run_training(config, overwrite=bool(getattr(args, "force", False)))
    except ValueError as err:  # bad combinations of flags, caught by ModelConfig / splits
        raise InvalidInput(str(err)) from err
    mc = result.model_config
    losses = ", ".join(f"{k}={v:.4f}" for k, v in result.final_losses.items())
    print(f"trained {mc.kind} ({mc.body} body {list(mc.hidden)}, {mc.decoder} decoder, "
          f"latent {mc.latent_dim}, beta {mc.beta:g}) on {config.data}")
    print(f"rows: {result.split['n_train']} train, {result.split['n_validation']} validation, "
          f"{result.split['n_calibration']} calibration (held out)")
    sched = result.schedule
    print(f"epochs: {result.epochs_run} of at most {sched.epochs} (best {result.best_epoch}), "
          f"batch {sched.batch_size}, {result.epochs_run * sched.steps_per_epoch} steps "
          f"in {result.train_s:.1f} s; {losses}")
    if result.sample_weights is not None and result.effective_sample_size is not None:
        print(f"sample weights (row,weight,log_density; {config.debias_mode} mode, effective "
              f"sample size {result.effective_sample_size:.0f} of {result.split['n_train']} "
              f"rows): {result.sample_weights}")
    print(f"run directory: {result.run_dir}")
