"""Default models for a fresh machine: `make run` serves something useful out of the box.

Five models on the built-in digits, trained and exported one after the other when the
repository holds no model version: two scorers (digits-vae, digits-ae) and three generators
(digits-gan, digits-cgan, digits-pix2pix). Each trains on one core; together they take
about a minute and a half (`make run` on an empty repository must stay under 3 minutes on 2
cores), with the generators' epochs set below so that their sample grids are recognisable.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from latentwatch.errors import InvalidInput, quote
from latentwatch.export.exporter import export_run
from latentwatch.families import family
from latentwatch.repository.layout import published_versions

logger = logging.getLogger(__name__)

DEFAULT_DATA = "digits"


@dataclass(frozen=True)
class DefaultModel:
    name: str  # model name in the repository
    kind: str  # model kind (latentwatch.families)
    epochs: int | None = None  # None: the training default for the data


# Generator epochs, chosen by looking at the sample grids on digits (each epoch is 25 optimiser
# steps, 0.3-0.8 s on one core): at 20 the gan draws mostly 1-like strokes and the cgan's eight
# samples of a label look alike; at 40 the gan's grid shows varied, readable digits and each cgan
# row its label in several styles. pix2pix's translations match the true digits from about 15
# epochs (held-out L1 0.096) and sharpen up to 30 (the training default).
DEFAULT_MODELS = (
    DefaultModel("digits-vae", "vae"),
    DefaultModel("digits-ae", "ae"),
    DefaultModel("digits-gan", "gan", epochs=40),
    DefaultModel("digits-cgan", "cgan", epochs=40),
    DefaultModel("digits-pix2pix", "pix2pix", epochs=30),
)
DEFAULT_NAMES = tuple(model.name for model in DEFAULT_MODELS)


def ensure_default_models(
    repo: Path,
    names: Sequence[str] | None = None,
    *,
    max_epochs: int | None = None,
    runs_dir: Path | None = None,
) -> list[Path]:
    """Train and export the default models when `repo` has no model versions.

    `names` picks some of DEFAULT_NAMES (None: all, in their order); `max_epochs` caps every
    model's epochs (quick checks); `runs_dir` keeps the training runs (sample grids under
    <runs_dir>/<name>/samples/) instead of a temporary directory. Returns the version
    directories created (empty when the repository already had models).
    """
    chosen = _chosen(names)
    if max_epochs is not None and max_epochs < 1:
        raise InvalidInput(f"max_epochs must be >= 1, got {max_epochs}")
    repo = Path(repo)
    found = published_versions(repo)
    if found:
        logger.info(
            "%s already holds %d model version(s); skipping the default models", repo, len(found)
        )
        return []
    started_s = time.perf_counter()
    logger.info("%s has no models: training and exporting %s on %s",
                repo, ", ".join(model.name for model in chosen), DEFAULT_DATA)
    created = []
    with tempfile.TemporaryDirectory(prefix="latentwatch-bootstrap-") as scratch:
        runs = Path(runs_dir) if runs_dir is not None else Path(scratch)
        for step, model in enumerate(chosen, start=1):
            model_started_s = time.perf_counter()
            epochs = _epochs(model, max_epochs)
            logger.info("[%d/%d] training %s (%s on %s, %s epochs)", step, len(chosen),
                        model.name, model.kind, DEFAULT_DATA, epochs or "default")
            run_dir = _train(model, runs / model.name, epochs)
            logger.info("[%d/%d] exporting %s", step, len(chosen), model.name)
            created.append(export_run(run_dir, repo, model.name))
            logger.info("[%d/%d] %s ready in %.1f s", step, len(chosen), model.name,
                        time.perf_counter() - model_started_s)
    logger.info("default models ready in %.1f s: %s", time.perf_counter() - started_s,
                ", ".join(str(p) for p in created))
    return created


def _chosen(names: Sequence[str] | None) -> list[DefaultModel]:
    if names is None:
        return list(DEFAULT_MODELS)
    unknown = [name for name in names if name not in DEFAULT_NAMES]
    if unknown or not names:
        raise InvalidInput(f"default models are {', '.join(DEFAULT_NAMES)}; got "
                           f"{', '.join(quote(name) for name in unknown) or 'none'}")
    return [model for model in DEFAULT_MODELS if model.name in names]


def _epochs(model: DefaultModel, max_epochs: int | None) -> int | None:
    if max_epochs is None:
        return model.epochs
    return min(model.epochs, max_epochs) if model.epochs is not None else max_epochs


def _train(model: DefaultModel, out: Path, epochs: int | None) -> Path:
    """Train one default model into `out` (imports torch: only when something is trained)."""
    if family(model.kind).adversarial:
        from latentwatch.models.gan_training import GANTrainConfig, run_gan_training

        return run_gan_training(
            GANTrainConfig(data=DEFAULT_DATA, model=model.kind, out=out, epochs=epochs)
        ).run_dir
    from latentwatch.models.training import TrainConfig, train

    return train(TrainConfig(data=DEFAULT_DATA, model=model.kind, out=out, epochs=epochs))
