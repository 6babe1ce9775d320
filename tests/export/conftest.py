"""Tiny real models, trained once per session on the built-in digits, and their exports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

# name -> TrainConfig overrides. The conv VAE and AE are the default shapes for digits; the
# beta-VAE covers the MLP body and the Gaussian decoder (standardised rows).
TINY_MODELS: dict[str, dict[str, object]] = {
    "vae": {"model": "vae"},
    "ae": {"model": "ae"},
    "beta-vae": {"model": "beta-vae", "body": "mlp", "decoder": "gaussian", "hidden": (64, 32)},
}
TINY_EPOCHS = 3


@dataclass(frozen=True)
class Exported:
    kind: str
    run_dir: Path
    version_dir: Path


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run directories of tiny digits models, by model kind."""
    from latentwatch.models.training import TrainConfig, train

    root = tmp_path_factory.mktemp("export-runs")
    runs = {}
    for kind, overrides in TINY_MODELS.items():
        config = TrainConfig(
            data="digits", out=root / kind, epochs=TINY_EPOCHS, seed=0, progress=False,
            **overrides,  # type: ignore[arg-type]
        )
        runs[kind] = train(config)
    return runs


@pytest.fixture(scope="session")
def exported(
    trained_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Exported]:
    """Each tiny model exported once into one shared repository, by model kind."""
    from latentwatch.export.exporter import export_run

    repo = tmp_path_factory.mktemp("export-repo")
    return {
        kind: Exported(kind, run_dir, export_run(run_dir, repo, f"digits-{kind}"))
        for kind, run_dir in trained_runs.items()
    }
