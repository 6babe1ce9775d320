"""`latentwatch train`: the flags -> TrainConfig -> models.training.run_training -> a summary.

Imports torch (through latentwatch.models): main.py imports this module only for `train`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from latentwatch.errors import InvalidInput
from latentwatch.families import family, kinds_where
from latentwatch.models.gan_training import GANTrainConfig, run_gan_training
from latentwatch.models.training import TrainConfig, run_training

# Flags of likelihood training only; given with an adversarial kind they are refused. Each maps
# to the value it has when left unset.
_LIKELIHOOD_FLAGS = {"body": "auto", "decoder": "auto", "beta": None,
                     "n_importance_samples": None, "calibration_fraction": None,
                     "validation_fraction": None, "debias_bins": None, "debias_alpha": None,
                     "debias_mode": None, "debias_warmup_epochs": None, "classifier": None,
                     "classifier_weight": None}
_ADVERSARIAL_FLAGS = {"held_out_fraction": None, "edge_threshold": None, "spectral_norm": None,
                      "class_loss_weight": None}


def _parse_hidden(text: str | None) -> tuple[int, ...] | None:
    if text is None or not text.strip():
        return None
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InvalidInput(f"--hidden: expected comma-separated integers, got {text!r}") from None
    return widths


def _given(args: argparse.Namespace, flags: Mapping[str, object]) -> list[str]:
    """The flags (as typed) given a value other than the one they have when left unset."""
    return ["--" + name.replace("_", "-") for name, unset in flags.items()
            if getattr(args, name, unset) not in (unset, False)]


def gan_config_from_args(args: argparse.Namespace) -> GANTrainConfig:
    """GANTrainConfig from the flags of `latentwatch train --model gan|cgan|pix2pix`."""
    if refused := _given(args, _LIKELIHOOD_FLAGS):
        raise InvalidInput(f"{', '.join(refused)}: not for --model {args.model} (an "
                           "adversarial model: no encoder, likelihood or calibration)")
    given = {
        "hidden": _parse_hidden(getattr(args, "hidden", None)),
        "latent_dim": args.latent_dim,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_rows": args.max_rows,
        "seed": args.seed,
        "held_out_fraction": getattr(args, "held_out_fraction", None),
        "edge_threshold": getattr(args, "edge_threshold", None),
        "spectral_norm": getattr(args, "spectral_norm", None),
        "class_loss_weight": getattr(args, "class_loss_weight", None),
    }
    try:
        return GANTrainConfig(data=args.data, model=args.model, out=Path(args.out),
                              **{k: v for k, v in given.items() if v is not None})
    except ValueError as err:
        raise InvalidInput(str(err)) from err


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from the `latentwatch train` flags; None (or 'auto') keeps the default."""
    if refused := _given(args, _ADVERSARIAL_FLAGS):
        only = " or ".join(kinds_where(adversarial=True))
        raise InvalidInput(f"{', '.join(refused)}: only with --model {only}")
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
    if family(args.model).adversarial:
        _run_adversarial(args)
        return
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


def _run_adversarial(args: argparse.Namespace) -> None:
    config = gan_config_from_args(args)
    result = run_gan_training(config, overwrite=bool(getattr(args, "force", False)))
    losses = ", ".join(f"{k}={v:.4f}" for k, v in result.final.items())
    print(f"trained {result.kind} on {config.data}: {result.n_train} train, "
          f"{result.n_held_out} held-out rows")
    print(f"epochs: {result.epochs_run}, batch {config.batch_size}, in {result.train_s:.1f} s; "
          f"last epoch {losses}")
    print(f"run directory: {result.run_dir} (sample grids under samples/)")
