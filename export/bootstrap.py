"""Default models for a fresh machine: `make run` serves something useful out of the box."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from latentwatch.export.exporter import export_run
from latentwatch.repository.layout import published_versions

logger = logging.getLogger(__name__)

# (model name in the repository, model kind), trained on the built-in digits data.
DEFAULT_MODELS = (("digits-vae", "vae"), ("digits-ae", "ae"))
DEFAULT_DATA = "digits"


def ensure_default_models(repo: Path) -> list[Path]:
    """Train and export the default models when `repo` has no model versions.

    Returns the version directories created (empty when the repository already had models).
    """
    from latentwatch.models.training import TrainConfig, train

    repo = Path(repo)
    found = published_versions(repo)
    if found:
        logger.info(
            "%s already holds %d model version(s); skipping the default models", repo, len(found)
        )
        return []
    started_s = time.perf_counter()
    logger.info("%s has no models: training and exporting %s on %s",
                repo, ", ".join(name for name, _ in DEFAULT_MODELS), DEFAULT_DATA)
    created = []
    with tempfile.TemporaryDirectory(prefix="latentwatch-bootstrap-") as scratch:
        for step, (name, kind) in enumerate(DEFAULT_MODELS, start=1):
            logger.info("[%d/%d] training %s (%s on %s)", step, len(DEFAULT_MODELS), name, kind,
                        DEFAULT_DATA)
            run_dir = train(TrainConfig(data=DEFAULT_DATA, model=kind, out=Path(scratch) / name))
            logger.info("[%d/%d] exporting %s", step, len(DEFAULT_MODELS), name)
            created.append(export_run(run_dir, repo, name))
    logger.info("default models ready in %.1f s: %s", time.perf_counter() - started_s,
                ", ".join(str(p) for p in created))
    return created
