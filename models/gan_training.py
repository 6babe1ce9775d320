"""Adversarial training (gan, cgan, pix2pix): data -> seeded held-out split -> run directory.

Run directory (file names in latentwatch.models.run_dir)::

    RUN_DIR/checkpoint.pt          see below; torch.load(..., weights_only=True)
    RUN_DIR/metrics.json           per-epoch losses, the resolved configs, seconds
    RUN_DIR/splits.npz             row indices: train, held_out (int64)
    RUN_DIR/validation_rows.npy    (n_held_out, F) float32 raw held-out rows (images: the true
                                   images; pix2pix sketches follow from checkpoint["edge_map"])
    RUN_DIR/samples/epoch_001.png  sample grid per epoch (images only): gan 8x8 samples from a
                                   fixed z; cgan one row per class; pix2pix rows of held-out
                                   sketch | translation | true image

checkpoint.pt is a plain dict (models/gan_checkpoint.py writes and reads it)::

    format_version  1
    kind            "gan" | "cgan" | "pix2pix"
    config          asdict(GANConfig) or asdict(Pix2PixConfig), tuples as lists; rebuilt with
                    GANConfig(**config) / Pix2PixConfig(**config)
    generator       state_dict of model.generator: gan/cgan forward(z (B, Z)[, labels (B,)
                    int64]) -> (B, *sample_shape); pix2pix forward(image (B, 1, H, W)) -> same
                    shape. Model space [0, 1] (sigmoid output) for images and rows alike.
    discriminator   state_dict of model.discriminator
    preprocessing   the Preprocessing fields (latentwatch.scoring.preprocessing): images
                    x / max_value clipped to [0, 1]; rows min-max scaled to [0, 1]. Data units
                    of a sample: Preprocessing.invert(sample.reshape(B, F)).
    output_range    [0, max_value] for images (samples in data units lie in it), None for rows
    image_shape     [1, H, W] or None
    class_names     cgan: the label names in index order (label k means class_names[k])
    edge_map        pix2pix: asdict(latentwatch.data.pairs.EdgeRecipe), how sketches are made
    stabilisation   one line: what training used (spectral norm, label smoothing, ...)
    provenance      the Provenance fields, as VAE checkpoints
    history         one dict per epoch (d_loss, g_loss, d_real, d_fake[, val_l1], seconds)
    split           seed, held_out_fraction, n_train, n_held_out
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from latentwatch.data import Dataset, load_source
from latentwatch.data.pairs import EdgeRecipe, held_out_split, make_pairs
from latentwatch.errors import InvalidInput
from latentwatch.families import family, kinds_where, resolve
from latentwatch.models.dbvae import class_indices
from latentwatch.models.fit import TrainingError
from latentwatch.models.gan import GAN
from latentwatch.models.gan_checkpoint import save_gan_checkpoint
from latentwatch.models.gan_defaults import resolve_gan_config, resolve_gan_epochs
from latentwatch.models.pix2pix import Pix2Pix, l1_error
from latentwatch.models.preprocessing import min_max_preprocessing, preprocess, scale_preprocessing
from latentwatch.models.run_dir import METRICS_FILE, SPLITS_FILE, VALIDATION_ROWS_FILE
from latentwatch.models.sample_grid import write_sample_grid
from latentwatch.models.training import check_out_dir, torch_settings

logger = logging.getLogger(__name__)

ADVERSARIAL_KINDS = kinds_where(adversarial=True)


@dataclass(frozen=True)
class GANTrainConfig:
    data: str  # "digits" or a file path (see latentwatch.data.load_source)
    model: str  # gan, cgan or pix2pix
    out: Path
    epochs: int | None = None  # None: from the data (models/gan_defaults.py)
    batch_size: int = 64
    lr: float = 2e-4  # Adam, both networks (DCGAN and the Pix2Pix reference)
    beta1: float = 0.5
    latent_dim: int | None = None  # gan/cgan; None: from the data
    hidden: tuple[int, ...] | None = None  # gan/cgan widths or channels; pix2pix: (channels,)
    held_out_fraction: float = 0.1
    max_rows: int | None = None
    seed: int = 0
    spectral_norm: bool = False  # on the discriminator (models/gan.py says why it is off)
    real_label: float = 0.9  # gan/cgan one-sided label smoothing (1.0: none)
    class_loss_weight: float = 0.1  # cgan: auxiliary classification loss (models/gan.py); 0: none
    edge_threshold: float = EdgeRecipe.threshold  # pix2pix sketches
    n_threads: int = 1  # as TrainConfig: small models lose more than they gain from threads
    progress: bool = True
    sample_grids: bool = True  # one PNG per epoch under RUN_DIR/samples (images only)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.model not in ADVERSARIAL_KINDS:
            family(self.model)  # UnknownModelKind names the known kinds
            raise ValueError(f"adversarial training takes --model "
                             f"{' or '.join(ADVERSARIAL_KINDS)}, got {self.model!r}")
        for name in ("epochs", "batch_size", "latent_dim", "max_rows", "n_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not self.lr > 0 or not 0 <= self.beta1 < 1:
            raise ValueError(f"lr must be > 0 and beta1 in [0, 1), got {self.lr}, {self.beta1}")
        if self.hidden is not None:
            object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        EdgeRecipe(threshold=self.edge_threshold)  # ValueError names a bad threshold


@dataclass(frozen=True)
class GANTrainResult:
    run_dir: Path
    kind: str
    config: dict[str, Any]  # asdict of the model config
    epochs_run: int
    final: dict[str, float]  # the last epoch's losses
    train_s: float
    n_train: int
    n_held_out: int


@dataclass(frozen=True, eq=False)
class _Data:
    """Model-space tensors for training and the held-out rows, and what describes them."""

    x_train: Tensor  # (N, *shape) images or rows the discriminator sees as real
    x_held: Tensor
    cond_train: Tensor | None  # cgan labels (N,) or pix2pix sketches (N, 1, H, W)
    cond_held: Tensor | None
    preprocessing: dict[str, Any]
    train: np.ndarray
    held_out: np.ndarray
    class_names: list[str] | None = None
    recipe: EdgeRecipe | None = None


def run_gan_training(config: GANTrainConfig, *, overwrite: bool = True) -> GANTrainResult:
    """Train and write the run directory; `overwrite` False refuses a non-empty one."""
    check_out_dir(config.out, overwrite)
    dataset = load_source(config.data, max_rows=config.max_rows)
    data = _prepare(config, dataset)
    if len(data.train) < 2:  # batch norm needs two rows per batch
        raise InvalidInput(f"{dataset.source}: {len(data.train)} training row after holding "
                           f"out {len(data.held_out)}; adversarial training needs at least 2")
    model_config = resolve_gan_config(config, dataset, data.class_names)
    epochs = config.epochs or resolve_gan_epochs(len(data.train), config.batch_size)
    logger.info("training %s on %s: %d train, %d held-out rows, %d epochs of batch %d",
                config.model, dataset.source, len(data.train), len(data.held_out), epochs,
                config.batch_size)
    start_s = time.perf_counter()
    with torch_settings(config.n_threads):
        torch.manual_seed(config.seed)
        model = resolve(family(config.model).model_class)(model_config)
        history = _fit(model, data, config, epochs)
    train_s = time.perf_counter() - start_s
    _write_run_dir(config, dataset, data, model, history)
    final = {k: v for k, v in history[-1].items() if k not in ("epoch", "seconds")}
    metrics = {
        "train_config": {**asdict(config), "out": str(config.out)},
        "model_config": asdict(model_config),
        "history": history,
        "final": final,
        "n_train": len(data.train),
        "n_held_out": len(data.held_out),
        "train_seconds": round(train_s, 3),
    }
    (config.out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return GANTrainResult(run_dir=config.out, kind=config.model, config=asdict(model_config),
                          epochs_run=len(history), final=final, train_s=train_s,
                          n_train=len(data.train), n_held_out=len(data.held_out))


def _prepare(config: GANTrainConfig, dataset: Dataset) -> _Data:
    fam = family(config.model)
    train, held = held_out_split(dataset.n_rows, config.held_out_fraction, config.seed)
    if dataset.image_shape is not None and dataset.max_value is not None:
        preprocessing = scale_preprocessing(dataset.n_features, dataset.max_value)
        shape: tuple[int, ...] = dataset.image_shape
    elif fam.capabilities == ("translate",):
        raise InvalidInput(f"--model {config.model} needs images; {dataset.source} holds "
                           f"rows of {dataset.n_features} features")
    else:
        # Rows: the training split's [min, max] -> [0, 1], the generator's sigmoid range.
        preprocessing = min_max_preprocessing(dataset.X[train])
        shape = (dataset.n_features,)

    def model_space(rows: np.ndarray) -> Tensor:
        return torch.from_numpy(preprocess(rows, preprocessing)).view(-1, *shape)

    if fam.capabilities == ("translate",):
        pairs = make_pairs(dataset, EdgeRecipe(threshold=config.edge_threshold),
                           config.held_out_fraction, config.seed)
        return _Data(model_space(pairs.image[train]), model_space(pairs.image[held]),
                     model_space(pairs.sketch[train]), model_space(pairs.sketch[held]),
                     preprocessing, train, held, recipe=pairs.recipe)
    cond_train = cond_held = None
    class_names = None
    if fam.conditional:
        if dataset.y is None:
            raise InvalidInput(f"--model {config.model} needs class labels, and "
                               f"{dataset.source} has none (use an .npz with 'y', IDX images "
                               "with their labels file beside them, or digits)")
        index, classes = class_indices(dataset.y, dataset.source)
        cond_train, cond_held = torch.from_numpy(index[train]), torch.from_numpy(index[held])
        class_names = [str(c) for c in classes]
    return _Data(model_space(dataset.X[train]), model_space(dataset.X[held]), cond_train,
                 cond_held, preprocessing, train, held, class_names=class_names)


def _fit(model: GAN | Pix2Pix, data: _Data, config: GANTrainConfig,
         epochs: int) -> list[dict[str, Any]]:
    """Alternating Adam steps: the discriminator on real vs detached fakes, then the generator."""
    losses = resolve(family(config.model).loss)
    betas = (config.beta1, 0.999)
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=config.lr, betas=betas)
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=config.lr, betas=betas)
    shuffle = torch.Generator().manual_seed(config.seed)
    noise = torch.Generator().manual_seed(config.seed + 1)
    n = len(data.x_train)
    history: list[dict[str, Any]] = []
    bar = tqdm(range(1, epochs + 1), desc=f"train {config.model}", unit="epoch",
               file=sys.stderr, disable=None if config.progress else True, leave=False)
    with logging_redirect_tqdm():
        for epoch in bar:
            epoch_start_s = time.perf_counter()
            model.train()
            sums = dict.fromkeys(("d_loss", "g_loss", "d_real", "d_fake"), 0.0)
            order = torch.randperm(n, generator=shuffle)
            # Batch norm needs two rows: a lone last row is left for the next epoch.
            batches = [b for b in order.split(config.batch_size) if len(b) > 1]
            for rows in batches:
                real = data.x_train[rows]
                cond = data.cond_train[rows] if data.cond_train is not None else None
                fake = _generate(model, real, cond, noise)
                d_loss = losses(model, real, fake, cond, "discriminator")
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                g_loss = losses(model, real, fake, cond, "generator")
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                with torch.no_grad():
                    d_real, d_fake = _d_probabilities(model, real, fake, cond)
                for key, value in (("d_loss", d_loss), ("g_loss", g_loss), ("d_real", d_real),
                                   ("d_fake", d_fake)):
                    sums[key] += float(value.detach()) / len(batches)
            entry: dict[str, Any] = {"epoch": epoch, **{k: round(v, 6) for k, v in sums.items()}}
            if isinstance(model, Pix2Pix) and data.cond_held is not None:
                entry["val_l1"] = round(l1_error(model, data.cond_held, data.x_held), 6)
            entry["seconds"] = round(time.perf_counter() - epoch_start_s, 4)
            history.append(entry)
            if not all(np.isfinite(sums[k]) for k in sums):
                raise TrainingError(f"training diverged at epoch {epoch} ({sums}); try a "
                                    "smaller --lr")
            logger.info("epoch %d/%d %s", epoch, epochs, " ".join(
                f"{k}={v:.4f}" for k, v in entry.items() if k not in ("epoch", "seconds")))
            bar.set_postfix(d=f"{sums['d_loss']:.3f}", g=f"{sums['g_loss']:.3f}")
            if config.sample_grids and data.x_train.dim() == 4:
                write_sample_grid(config.out, epoch, model, data, seed=config.seed)
    bar.close()
    model.eval()
    return history


def _generate(model: GAN | Pix2Pix, real: Tensor, cond: Tensor | None,
              noise: torch.Generator) -> Tensor:
    if isinstance(model, Pix2Pix):
        assert cond is not None
        return model.generator(cond)
    return model.generator(model.prior(len(real), noise), cond)


def _d_probabilities(model: GAN | Pix2Pix, real: Tensor, fake: Tensor,
                     cond: Tensor | None) -> tuple[Tensor, Tensor]:
    """Mean D(real) and D(fake) as probabilities: near 0.5 each when neither network wins."""
    d = model.discriminator
    if isinstance(model, Pix2Pix):
        return torch.sigmoid(d(cond, real)).mean(), torch.sigmoid(d(cond, fake)).mean()
    return torch.sigmoid(d(real, cond)).mean(), torch.sigmoid(d(fake, cond)).mean()


def _write_run_dir(config: GANTrainConfig, dataset: Dataset, data: _Data,
                   model: GAN | Pix2Pix, history: list[dict[str, Any]]) -> None:
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    split = {"seed": config.seed, "held_out_fraction": config.held_out_fraction,
             "n_train": len(data.train), "n_held_out": len(data.held_out)}
    save_gan_checkpoint(out, model, dataset, data.preprocessing, history, split,
                        class_names=data.class_names, recipe=data.recipe)
    np.save(out / VALIDATION_ROWS_FILE, dataset.X[data.held_out].astype(np.float32),
            allow_pickle=False)
    np.savez(out / SPLITS_FILE, train=data.train, held_out=data.held_out)

