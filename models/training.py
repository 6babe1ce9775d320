"""Training: data source -> seeded splits -> model -> run directory.

Run directory layout::

    RUN_DIR/checkpoint.pt          weights, configs, preprocessing, provenance, history
    RUN_DIR/calibration_rows.npy   (n_calibration, F) float32 raw rows, never trained on
    RUN_DIR/splits.npz             row indices of train / validation / calibration (int64)
    RUN_DIR/metrics.json           per-epoch losses, best epoch, the resolved configs
    RUN_DIR/sample_weights.csv     dbvae only: row,weight,log_density per training row
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

import latentwatch
from latentwatch.bias.options import DEFAULT_ALPHA, DEFAULT_BINS, BiasOptions
from latentwatch.data import Dataset, load_source
from latentwatch.errors import InvalidInput
from latentwatch.families import family, kinds_where
from latentwatch.models.base import LatentModel
from latentwatch.models.checkpoint import save_checkpoint
from latentwatch.models.config import BodyKind, DecoderKind, ModelConfig, ModelKind
from latentwatch.models.dbvae import (
    WEIGHTS_FILE,
    ClassifierHead,
    HeadConfig,
    class_indices,
    weights_for,
    write_sample_weights,
)
from latentwatch.models.defaults import (
    DEBIAS_MODE,
    DEBIAS_WARMUP_EPOCHS,
    TrainSchedule,
    resolve_model_config,
    resolve_preprocessing,
    resolve_schedule,
)
from latentwatch.models.factory import build_model
from latentwatch.models.fit import TrainingError as TrainingError  # raised by the loop
from latentwatch.models.fit import fit
from latentwatch.models.preprocessing import preprocess
from latentwatch.models.run_dir import (
    CALIBRATION_ROWS_FILE,
    CHECKPOINT_FILE,
    METRICS_FILE,
    SPLITS_FILE,
    TRAIN_ROWS_FILE,
    VALIDATION_ROWS_FILE,
)
from latentwatch.models.splits import Split, split_rows

logger = logging.getLogger(__name__)

# At most this many training (and validation) rows are kept: the second stage uses a bounded
# reference.
MAX_KEPT_ROWS = 8192
# Below this mean KL (nats per row) the encoder carries almost no information about the input.
COLLAPSED_KL_NATS = 0.1


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
    n_importance_samples: int | None = None  # None: from the data (models/defaults.py)
    calibration_fraction: float = 0.2
    validation_fraction: float = 0.1
    max_rows: int | None = None
    seed: int = 0
    patience: int | None = None  # epochs without a better validation loss before stopping
    # torch intra-op threads. One by default: these models are small, gain little from more,
    # and lose up to 10x when the cores are shared with other processes (measured).
    n_threads: int = 1
    progress: bool = True  # tqdm bar on stderr
    # model "dbvae" only: resampling by latent density (latentwatch.bias), recomputed each epoch
    # after `debias_warmup_epochs` plain ones, and an optional classifier head on the means.
    debias_bins: int = DEFAULT_BINS
    debias_alpha: float = DEFAULT_ALPHA
    debias_mode: str = DEBIAS_MODE
    debias_warmup_epochs: int = DEBIAS_WARMUP_EPOCHS
    classifier: bool = False
    classifier_weight: float = 1.0  # loss = VAE loss + classifier_weight * cross-entropy

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if family(self.model).adversarial:
            raise ValueError(f"model {self.model!r} is adversarial: train it with "
                             "latentwatch.models.gan_training.GANTrainConfig")
        self._check_dbvae_fields()
        if self.hidden is not None:
            object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {self.n_threads}")

    def _check_dbvae_fields(self) -> None:
        defaults = {name: f.default for name, f in self.__dataclass_fields__.items()
                    if name.startswith(("debias_", "classifier"))}
        changed = [name for name, value in defaults.items() if getattr(self, name) != value]
        if not family(self.model).resamples and changed:
            only = " or ".join(map(repr, kinds_where(resampling="latent-density")))
            raise ValueError(f"{', '.join(changed)}: only for model {only}, not {self.model!r}")
        self.debias_options()  # InvalidInput names the bad value
        if self.debias_warmup_epochs < 0:
            raise ValueError(f"debias_warmup_epochs must be >= 0, got {self.debias_warmup_epochs}")
        if not (np.isfinite(self.classifier_weight) and self.classifier_weight > 0):
            raise ValueError(f"classifier_weight must be > 0, got {self.classifier_weight}")

    def debias_options(self) -> BiasOptions:
        return BiasOptions(bins=self.debias_bins, alpha=self.debias_alpha,
                           mode=self.debias_mode).validated()


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
    sample_weights: Path | None = None  # dbvae: the per-row weights file
    effective_sample_size: float | None = None  # dbvae: of the final weights


def train(config: TrainConfig, *, overwrite: bool = True) -> Path:
    """Train one model and write its run directory; returns the run directory."""
    return run_training(config, overwrite=overwrite).run_dir


def check_out_dir(out: Path, overwrite: bool) -> None:
    """InvalidInput unless `out` is absent, an empty directory, or `overwrite` is given."""
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"{out}: exists and is not a directory")
    if not (out.is_dir() and any(out.iterdir())):
        return
    what = "holds a training run" if (out / CHECKPOINT_FILE).exists() else "is not empty"
    if not overwrite:
        raise InvalidInput(f"{out}: {what}; choose another directory, or overwrite it with "
                           "--force")
    logger.warning("%s: %s; overwriting it", out, what)


def run_training(config: TrainConfig, *, overwrite: bool = True) -> TrainResult:
    """Train and write the run directory; `overwrite` False refuses a non-empty one (the CLI's
    default; library callers such as benchmarks rerun into the same directory)."""
    check_out_dir(config.out, overwrite)
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
    labels, classes = None, ()
    if config.classifier:
        index, classes = class_indices(dataset.y, dataset.source)
        labels = (torch.from_numpy(index[split.train]), torch.from_numpy(index[split.validation]))
    schedule = resolve_schedule(
        int(split.train.size), dataset.is_image,
        epochs=config.epochs, batch_size=config.batch_size, patience=config.patience,
    )
    logger.info("schedule: %s", schedule.describe())

    start_s = time.perf_counter()
    with torch_settings(config.n_threads):
        torch.manual_seed(config.seed)
        model = build_model(model_config)
        head = ClassifierHead(HeadConfig(model_config.latent_dim, classes)) if labels else None
        history, best_epoch = fit(model, x_train, x_val, config, schedule, head, labels)
        # dbvae: the weights a user gets come from the final encoder, as the last epoch's would.
        final_weights = (weights_for(model, x_train, config.debias_options())
                         if family(config.model).resamples else None)
    train_s = time.perf_counter() - start_s

    best = next(h for h in history if h["epoch"] == best_epoch)
    final_losses = {
        k: v for k, v in best.items() if k.startswith(("train_", "val_")) and v is not None
    }
    if model_config.is_variational and final_losses["train_kl"] < COLLAPSED_KL_NATS:
        logger.warning(
            "posterior collapse: KL is %.3f nats per row, so the latent code ignores the input "
            "(beta %g may be too large for this data; try a smaller --beta)",
            final_losses["train_kl"], model_config.beta,
        )
    _write_run_dir(config, dataset, split, model, preprocessing, history, final_losses, head)
    weights_path, ess = None, None
    if final_weights is not None:
        weights_path = config.out / WEIGHTS_FILE
        ess = write_sample_weights(weights_path, split.train, *final_weights)
        logger.info("final weights: effective sample size %.0f of %d rows; %s", ess,
                    split.train.size, weights_path)
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
    if ess is not None:
        metrics |= {"effective_sample_size": ess, "sample_weights": WEIGHTS_FILE}
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
        sample_weights=weights_path,
        effective_sample_size=ess,
    )


@contextmanager
def torch_settings(n_threads: int) -> Iterator[None]:
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


def _write_run_dir(
    config: TrainConfig,
    dataset: Dataset,
    split: Split,
    model: LatentModel,
    preprocessing: dict[str, Any],
    history: list[dict[str, Any]],
    final_losses: dict[str, float],
    head: ClassifierHead | None = None,
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
    if dataset.feature_names is not None:
        # Export copies them into the manifest's input spec (export/run_inputs.py).
        provenance["feature_names"] = list(dataset.feature_names)
    split_info = {
        "seed": config.seed,
        "calibration_fraction": config.calibration_fraction,
        "validation_fraction": config.validation_fraction,
        **split.describe(),
    }
    debias = None
    if family(config.model).resamples:
        debias = {"bins": config.debias_bins, "alpha": config.debias_alpha,
                  "mode": config.debias_mode, "warmup_epochs": config.debias_warmup_epochs,
                  "classifier_weight": config.classifier_weight if head is not None else None}
    save_checkpoint(out / CHECKPOINT_FILE, model, preprocessing, provenance, history,
                    split=split_info, classifier=head, debias=debias)
    # Raw rows as loaded: export applies the model's preprocessing itself.
    rng = np.random.default_rng(config.seed)
    for name, index in ((TRAIN_ROWS_FILE, split.train), (VALIDATION_ROWS_FILE, split.validation)):
        if len(index) > MAX_KEPT_ROWS:
            index = np.sort(rng.choice(index, MAX_KEPT_ROWS, replace=False))
        np.save(out / name, dataset.X[index].astype(np.float32), allow_pickle=False)
    np.save(out / CALIBRATION_ROWS_FILE, dataset.X[split.calibration].astype(np.float32),
            allow_pickle=False)
    np.savez(out / SPLITS_FILE, train=split.train, validation=split.validation,
             calibration=split.calibration)

