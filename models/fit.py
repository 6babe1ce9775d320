"""The optimisation loop: Adam over epochs, early stopping on the validation loss, and for
dbvae the epoch's rows drawn by resampling weight (models/dbvae.py) and an optional classifier
head trained jointly."""

from __future__ import annotations

import copy
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from latentwatch.errors import LatentwatchError
from latentwatch.families import family
from latentwatch.models.base import LatentModel
from latentwatch.models.dbvae import ClassifierHead, classifier_loss, epoch_sample
from latentwatch.models.defaults import TrainSchedule
from latentwatch.models.factory import model_loss
from latentwatch.models.vae import VAE, vae_loss_and_means

if TYPE_CHECKING:  # training.py imports this module
    from latentwatch.models.training import TrainConfig

logger = logging.getLogger(__name__)

MAX_GRAD_NORM = 10.0  # guards the Gaussian decoder's early steps against blow-ups
EVAL_BATCH_ROWS = 4096
DECODER_LOGVAR_LR_FACTOR = 10.0
Labels = tuple[torch.Tensor, torch.Tensor]  # class indices of the training and validation rows


class TrainingError(LatentwatchError):
    """Training could not produce a usable model (e.g. the loss became NaN)."""


def fit(
    model: LatentModel,
    x_train: torch.Tensor,
    x_val: torch.Tensor,
    config: TrainConfig,
    schedule: TrainSchedule,
    head: ClassifierHead | None = None,
    labels: Labels | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Adam with early stopping on the validation loss; leaves the best weights in `model` (and
    `head`). dbvae: each epoch after the warm-up trains on rows drawn by resampling weight."""
    optimizer = torch.optim.Adam(_parameter_groups(model, config.lr, head))
    shuffle = torch.Generator().manual_seed(config.seed)
    noise = torch.Generator().manual_seed(config.seed + 1)
    y_train, y_val = labels if labels is not None else (None, None)
    history: list[dict[str, Any]] = []
    best_loss, best_epoch, best_state = float("inf"), 0, _state(model, head)
    bar = tqdm(range(1, schedule.epochs + 1), desc="train", unit="epoch", file=sys.stderr,
               disable=None if config.progress else True, leave=False)
    # Small tables run up to 1000 short epochs: log about 30 of them, and always the first.
    log_every = max(1, schedule.epochs // 30)
    with logging_redirect_tqdm():
        for epoch in bar:
            epoch_start_s = time.perf_counter()
            order = torch.randperm(len(x_train), generator=shuffle)
            debias: dict[str, Any] = {}
            if family(config.model).resamples:
                # Uniform rows during the warm-up: their effective sample size is every row.
                debias = {"resampled": False, "ess": float(len(x_train))}
                if epoch > config.debias_warmup_epochs:
                    sample = epoch_sample(model, x_train, config.debias_options(),
                                          n_draws=len(x_train), seed=config.seed + epoch)
                    order = torch.from_numpy(sample.rows)
                    debias = {"resampled": True, "ess": sample.effective_sample_size}
            train_terms = _train_epoch(model, optimizer, x_train, order, schedule.batch_size,
                                       noise, head, y_train, config.classifier_weight)
            val_terms = (_evaluate(model, x_val, config.seed + 2, head, y_val) if len(x_val)
                         else dict.fromkeys(train_terms))
            entry = {
                "epoch": epoch,
                **{f"train_{k}": v for k, v in train_terms.items()},
                **{f"val_{k}": v for k, v in val_terms.items()},
                **debias,
                "seconds": round(time.perf_counter() - epoch_start_s, 4),
            }
            history.append(entry)
            if not np.isfinite(entry["train_loss"]):
                raise TrainingError(
                    f"training diverged at epoch {epoch} (loss {entry['train_loss']}); "
                    "try a smaller --lr"
                )
            val_loss = entry["val_loss"]
            extra = "".join(
                f" {name}={entry[key]:.{digits}f}"
                for name, key, digits in (("ess", "ess", 0), ("val_acc", "val_accuracy", 3))
                if entry.get(key) is not None
            )
            logger.log(
                logging.INFO if epoch == 1 or epoch % log_every == 0 else logging.DEBUG,
                "epoch %d/%d train_loss=%.4f val_loss=%s recon=%.4f kl=%.4f%s",
                epoch, schedule.epochs, entry["train_loss"],
                "n/a" if val_loss is None else f"{val_loss:.4f}",
                entry["train_recon"], entry["train_kl"], extra,
            )
            bar.set_postfix(train=f"{entry['train_loss']:.3f}",
                            val="n/a" if val_loss is None else f"{val_loss:.3f}")
            # Without a validation split, the last epoch is kept. The classifier head does not
            # steer early stopping: the exported model is the VAE.
            monitored = val_loss if val_loss is not None else -float(epoch)
            if monitored < best_loss:
                best_loss, best_epoch = monitored, epoch
                best_state = _state(model, head)
            elif epoch - best_epoch >= schedule.patience:
                logger.info("early stop at epoch %d: no better validation loss since epoch %d",
                            epoch, best_epoch)
                break
    bar.close()
    model.load_state_dict(best_state[0])
    model.eval()
    if head is not None:
        head.load_state_dict(best_state[1])
        head.eval()
    return history, best_epoch


def _state(model: LatentModel, head: ClassifierHead | None) -> tuple[dict[str, Any], ...]:
    return tuple(copy.deepcopy(m.state_dict()) for m in (model, head) if m is not None)


def _parameter_groups(
    model: LatentModel, lr: float, head: ClassifierHead | None = None
) -> list[dict[str, Any]]:
    """The Gaussian decoder's log-variance gets a larger step: Adam moves each parameter by
    about lr per step, and the log-variance often has to travel several units (a noise std
    of 0.05 on standardised data is a log-variance of -6), which at the network's lr would take
    thousands of steps."""
    logvar = model.decoder_logvar
    others = [p for p in model.parameters() if p is not logvar]
    if head is not None:
        others += list(head.parameters())
    groups: list[dict[str, Any]] = [{"params": others, "lr": lr}]
    if logvar is not None:
        groups.append({"params": [logvar], "lr": lr * DECODER_LOGVAR_LR_FACTOR})
    return groups


def _train_epoch(
    model: LatentModel,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    noise: torch.Generator,
    head: ClassifierHead | None = None,
    y: torch.Tensor | None = None,
    head_weight: float = 1.0,
) -> dict[str, float]:
    """One pass over x[order] in batches (order: a permutation, or a resampled draw); the
    row-weighted mean loss, recon and kl, and the head's classifier_loss and accuracy."""
    model.train()
    if head is not None:
        head.train()
    sums = np.zeros(5)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = x[index]
        if head is None or y is None:
            terms = model_loss(model, batch, noise)
            objective, head_terms = terms.total, (0.0, 0)
        else:
            assert isinstance(model, VAE)
            terms, mu = vae_loss_and_means(model, batch, noise)
            ce, correct = classifier_loss(head, mu, y[index])
            objective, head_terms = terms.total + head_weight * ce, (ce.item(), correct)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        if head is not None:  # on its own: the VAE's large gradients would shrink the head's
            torch.nn.utils.clip_grad_norm_(head.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        sums[:3] += len(batch) * np.array([t.item() for t in terms])
        sums[3:] += (len(batch) * head_terms[0], head_terms[1])
    return _terms(sums / len(order), head is not None)


@torch.no_grad()
def _evaluate(
    model: LatentModel,
    x: torch.Tensor,
    noise_seed: int,
    head: ClassifierHead | None = None,
    y: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean loss terms with the same noise every epoch, so epochs compare fairly."""
    model.eval()
    if head is not None:
        head.eval()
    noise = torch.Generator().manual_seed(noise_seed)
    sums = np.zeros(5)
    for start in range(0, len(x), EVAL_BATCH_ROWS):
        batch = x[start : start + EVAL_BATCH_ROWS]
        if head is None or y is None:
            terms = model_loss(model, batch, noise)
        else:
            assert isinstance(model, VAE)
            terms, mu = vae_loss_and_means(model, batch, noise)
            ce, correct = classifier_loss(head, mu, y[start : start + EVAL_BATCH_ROWS])
            sums[3:] += (len(batch) * ce.item(), correct)
        sums[:3] += len(batch) * np.array([t.item() for t in terms])
    return _terms(sums / len(x), head is not None)


def _terms(means: np.ndarray, with_head: bool) -> dict[str, float]:
    names = ("loss", "recon", "kl", "classifier_loss", "accuracy")[: 5 if with_head else 3]
    return dict(zip(names, means[: len(names)].tolist(), strict=True))
