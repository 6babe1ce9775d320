"""Training: data source -> seeded splits -> model -> run directory.

Run directory layout::

    RUN_DIR/checkpoint.pt          weights, configs, preprocessing, provenance, history
    RUN_DIR/calibration_rows.npy   (n_calibration, F) float32 raw rows, never trained on
    RUN_DIR/splits.npz             row indices of train / validation / calibration (int64)
    RUN_DIR/metrics.json           per-epoch losses, best epoch, the resolved configs
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import latentwatch
from latentwatch.data import Dataset, load_source
from latentwatch.errors import InvalidInput, LatentwatchError
from latentwatch.models.base import LatentModel
from latentwatch.models.checkpoint import save_checkpoint
from latentwatch.models.config import BodyKind, DecoderKind, ModelConfig, ModelKind
from latentwatch.models.defaults import (
    TrainSchedule,
    resolve_model_config,
    resolve_preprocessing,
    resolve_schedule,
)
from latentwatch.models.factory import build_model, model_loss
from latentwatch.models.preprocessing import preprocess
from latentwatch.models.splits import Split, split_rows

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
CALIBRATION_FILE = "calibration_rows.npy"
SPLITS_FILE = "splits.npz"
# Raw training and validation rows for export's second stage (kNN reference, standardisation).
TRAIN_ROWS_FILE = "train_rows.npy"
VALIDATION_ROWS_FILE = "validation_rows.npy"
# At most this many of each are kept: the second stage uses a bounded reference.
MAX_KEPT_ROWS = 8192
METRICS_FILE = "metrics.json"
MAX_GRAD_NORM = 10.0  # guards the Gaussian decoder's early steps against blow-ups
EVAL_BATCH_ROWS = 4096
DECODER_LOGVAR_LR_FACTOR = 10.0
# Below this mean KL (nats per row) the encoder carries almost no information about the input.
COLLAPSED_KL_NATS = 0.1


class TrainingError(LatentwatchError):
    """Training could not produce a usable model (e.g. the loss became NaN)."""


@dataclass(frozen=True)
class TrainConfig:
    data: str  # "digits" or a file path (see latentwatch.data.load_source)
    model: ModelKind
    out: Path  # run directory
    body: Literal["auto"] | BodyKind = "auto"  # auto: conv for images, mlp for rows
    hidden: tuple[int, ...] | None = None  # None: from the data (see models/defaults.py)
    latent_dim: int | None = None
    beta: float | None = None  # None: 4 for beta-vae, 1 otherwise
    decoder: Literal["auto"] | DecoderKind = "auto"  # auto: bernoulli images, gaussian rows
    # None: from the data (models/defaults.py resolve_schedule). Images: 30 epochs of batch 64,
    # patience 5. Tabular rows: batch from the row count, epochs and patience from a step budget.
    epochs: int | None = None  # at most; early stopping usually ends sooner
    batch_size: int | None = None
    lr: float = 2e-3
    n_importance_samples: int = 16
    calibration_fraction: float = 0.2
    validation_fraction: float = 0.1
    max_rows: int | None = None
    seed: int = 0
    patience: int | None = None  # epochs without a better validation loss before stopping
    # torch intra-op threads. One by default: these models are small, gain little from more,
    # and lose up to 10x when the cores are shared with other processes (measured).
    n_threads: int = 1
    progress: bool = True  # tqdm bar on stderr

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.hidden is not None:
            object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {self.n_threads}")


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model_config: ModelConfig
    split: dict[str, int]
    epochs_run: int
    best_epoch: int
    final_losses: dict[str, float]
    train_s: float
    schedule: TrainSchedule


def train(config: TrainConfig) -> Path:
    """Train one model and write its run directory; returns the run directory."""
    return run_training(config).run_dir


def run_training(config: TrainConfig) -> TrainResult:
    if config.out.exists() and not config.out.is_dir():
        raise InvalidInput(f"{config.out}: exists and is not a directory")
    if (config.out / CHECKPOINT_FILE).exists():
        logger.warning("%s: overwriting the previous training run", config.out)
    dataset = load_source(config.data, max_rows=config.max_rows)
    split = split_rows(
        dataset.n_rows, config.calibration_fraction, config.validation_fraction, config.seed
    )
    model_config = resolve_model_config(
        dataset,
        config.model,
        body=config.body,
        decoder=config.decoder,
        hidden=config.hidden,
        latent_dim=config.latent_dim,
        beta=config.beta,
        n_importance_samples=config.n_importance_samples,
    )
    preprocessing = resolve_preprocessing(dataset, model_config, dataset.X[split.train])
    logger.info(
        "training %s (%s body, %s decoder, latent %d) on %s: %s",
        model_config.kind, model_config.body, model_config.decoder, model_config.latent_dim,
        dataset.source, split.describe(),
    )
    x_train = torch.from_numpy(preprocess(dataset.X[split.train], preprocessing))
    x_val = torch.from_numpy(preprocess(dataset.X[split.validation], preprocessing))
    schedule = resolve_schedule(
        int(split.train.size), dataset.is_image,
        epochs=config.epochs, batch_size=config.batch_size, patience=config.patience,
    )
    logger.info("schedule: %s", schedule.describe())

    start_s = time.perf_counter()
    with _torch_settings(config.n_threads):
        torch.manual_seed(config.seed)
        model = build_model(model_config)
        history, best_epoch = _fit(model, x_train, x_val, config, schedule)
    train_s = time.perf_counter() - start_s

    best = next(h for h in history if h["epoch"] == best_epoch)
    final_losses = {
        k: v for k, v in best.items() if k not in ("epoch", "seconds") and v is not None
    }
    if model_config.is_variational and final_losses["train_kl"] < COLLAPSED_KL_NATS:
        logger.warning(
            "posterior collapse: KL is %.3f nats per row, so the latent code ignores the input "
            "(beta %g may be too large for this data; try a smaller --beta)",
            final_losses["train_kl"], model_config.beta,
        )
    _write_run_dir(config, dataset, split, model, preprocessing, history, final_losses)
    metrics = {
        "train_config": {**asdict(config), "out": str(config.out)},
        "model_config": asdict(model_config),
        "split": split.describe(),
        "history": history,
        "schedule": {**asdict(schedule), "auto": list(schedule.auto)},
        "best_epoch": best_epoch,
        "stopped_early": len(history) < schedule.epochs,
        "final_losses": final_losses,
        "train_seconds": round(train_s, 3),
    }
    (config.out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return TrainResult(
        run_dir=config.out,
        model_config=model_config,
        split=split.describe(),
        epochs_run=len(history),
        best_epoch=best_epoch,
        final_losses=final_losses,
        train_s=train_s,
        schedule=schedule,
    )


@contextmanager
def _torch_settings(n_threads: int) -> Iterator[None]:
    """Deterministic kernels and a fixed thread count, restored afterwards."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(n_threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.set_num_threads(previous_threads)


def _fit(
    model: LatentModel,
    x_train: torch.Tensor,
    x_val: torch.Tensor,
    config: TrainConfig,
    schedule: TrainSchedule,
) -> tuple[list[dict[str, Any]], int]:
    """Adam with early stopping on the validation loss; leaves the best weights in `model`."""
    optimizer = torch.optim.Adam(_parameter_groups(model, config.lr))
    shuffle = torch.Generator().manual_seed(config.seed)
    noise = torch.Generator().manual_seed(config.seed + 1)
    history: list[dict[str, Any]] = []
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
    bar = tqdm(range(1, schedule.epochs + 1), desc="train", unit="epoch", file=sys.stderr,
               disable=None if config.progress else True, leave=False)
    # Small tables run up to 1000 short epochs: log about 30 of them, and always the first.
    log_every = max(1, schedule.epochs // 30)
    with logging_redirect_tqdm():
        for epoch in bar:
            epoch_start_s = time.perf_counter()
            train_terms = _train_epoch(model, optimizer, x_train, schedule.batch_size, shuffle,
                                       noise)
            val_terms = _evaluate(model, x_val, config.seed + 2) if len(x_val) else None
            entry = {
                "epoch": epoch,
                "train_loss": train_terms[0], "train_recon": train_terms[1],
                "train_kl": train_terms[2],
                "val_loss": val_terms[0] if val_terms else None,
                "val_recon": val_terms[1] if val_terms else None,
                "val_kl": val_terms[2] if val_terms else None,
                "seconds": round(time.perf_counter() - epoch_start_s, 4),
            }
            history.append(entry)
            if not np.isfinite(entry["train_loss"]):
                raise TrainingError(
                    f"training diverged at epoch {epoch} (loss {entry['train_loss']}); "
                    "try a smaller --lr"
                )
            logger.log(
                logging.INFO if epoch == 1 or epoch % log_every == 0 else logging.DEBUG,
                "epoch %d/%d train_loss=%.4f val_loss=%s recon=%.4f kl=%.4f",
                epoch, schedule.epochs, entry["train_loss"],
                "n/a" if val_terms is None else f"{entry['val_loss']:.4f}",
                entry["train_recon"], entry["train_kl"],
            )
            bar.set_postfix(train=f"{entry['train_loss']:.3f}",
                            val="n/a" if val_terms is None else f"{entry['val_loss']:.3f}")
            # Without a validation split, the last epoch is kept.
            monitored = entry["val_loss"] if val_terms else -float(epoch)
            if monitored < best_loss:
                best_loss, best_epoch = monitored, epoch
                best_state = copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= schedule.patience:
                logger.info("early stop at epoch %d: no better validation loss since epoch %d",
                            epoch, best_epoch)
                break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return history, best_epoch


def _parameter_groups(model: LatentModel, lr: float) -> list[dict[str, Any]]:
    """The Gaussian decoder's log-variance gets a larger step: Adam moves each parameter by
    about lr per step, and the log-variance often has to travel several units (a noise std
    of 0.05 on standardised data is a log-variance of -6), which at the network's lr would take
    thousands of steps."""
    logvar = model.decoder_logvar
    others = [p for p in model.parameters() if p is not logvar]
    groups: list[dict[str, Any]] = [{"params": others, "lr": lr}]
    if logvar is not None:
        groups.append({"params": [logvar], "lr": lr * DECODER_LOGVAR_LR_FACTOR})
    return groups


def _train_epoch(
    model: LatentModel,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    batch_size: int,
    shuffle: torch.Generator,
    noise: torch.Generator,
) -> tuple[float, float, float]:
    """One pass in shuffled batches; row-weighted mean (total, recon, kl)."""
    model.train()
    sums = np.zeros(3)
    order = torch.randperm(len(x), generator=shuffle)
    for start in range(0, len(x), batch_size):
        batch = x[order[start : start + batch_size]]
        terms = model_loss(model, batch, noise)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        sums += len(batch) * np.array([t.item() for t in terms])
    total, recon, kl = (sums / len(x)).tolist()
    return total, recon, kl


@torch.no_grad()
def _evaluate(model: LatentModel, x: torch.Tensor, noise_seed: int) -> tuple[float, float, float]:
    """Mean loss terms with the same noise every epoch, so epochs compare fairly."""
    model.eval()
    noise = torch.Generator().manual_seed(noise_seed)
    sums = np.zeros(3)
    for start in range(0, len(x), EVAL_BATCH_ROWS):
        batch = x[start : start + EVAL_BATCH_ROWS]
        sums += len(batch) * np.array([t.item() for t in model_loss(model, batch, noise)])
    total, recon, kl = (sums / len(x)).tolist()
    return total, recon, kl


def _write_run_dir(
    config: TrainConfig,
    dataset: Dataset,
    split: Split,
    model: LatentModel,
    preprocessing: dict[str, Any],
    history: list[dict[str, Any]],
    final_losses: dict[str, float],
) -> None:
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    provenance = {
        "data": dataset.source,
        "n_train": int(split.train.size),
        "n_validation": int(split.validation.size),
        "seed": config.seed,
        "epochs": len(history),
        "final_losses": final_losses,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "latentwatch_version": latentwatch.__version__,
        "torch_version": torch.__version__,
    }
    split_info = {
        "seed": config.seed,
        "calibration_fraction": config.calibration_fraction,
        "validation_fraction": config.validation_fraction,
        **split.describe(),
    }
    save_checkpoint(out / CHECKPOINT_FILE, model, preprocessing, provenance, history,
                    split=split_info)
    # Raw rows as loaded: export applies the model's preprocessing itself.
    rng = np.random.default_rng(config.seed)
    for name, index in ((TRAIN_ROWS_FILE, split.train), (VALIDATION_ROWS_FILE, split.validation)):
        if len(index) > MAX_KEPT_ROWS:
            index = np.sort(rng.choice(index, MAX_KEPT_ROWS, replace=False))
        np.save(out / name, dataset.X[index].astype(np.float32), allow_pickle=False)
    np.save(out / CALIBRATION_FILE, dataset.X[split.calibration].astype(np.float32),
            allow_pickle=False)
    np.savez(out / SPLITS_FILE, train=split.train, validation=split.validation,
             calibration=split.calibration)


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


def train_from_args(args: argparse.Namespace) -> None:
    """`latentwatch train`: train, then print a short summary."""
    config = config_from_args(args)
    try:
        result = run_training(config)
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
    print(f"run directory: {result.run_dir}")
