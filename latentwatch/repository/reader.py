"""Reading one model version from the repository, verified: what the server and offline scoring
load before any graph runs (torch-free, no onnxruntime).

A version is refused (VersionRefused, with the reason) when its manifest is unreadable or
describes another directory, a file does not match its sha256 (or is not listed at all), or the
calibration scores, the latent reference or the second stage do not fit the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.drift import LatentReference
from latentwatch.errors import VersionRefused
from latentwatch.repository.layout import MANIFEST_FILE
from latentwatch.repository.manifest import Manifest, verify_files
from latentwatch.scoring.pipeline import ScoringPipeline
from latentwatch.scoring.second_stage import KIND as STAGE_KIND
from latentwatch.scoring.second_stage import SecondStage


@dataclass(frozen=True, eq=False)
class VersionFiles:
    """A verified version directory, read: everything but the graphs, which runtimes load."""

    directory: Path
    manifest: Manifest
    manifest_json: str
    # kind -> ascending calibration scores; empty for a version that does not score.
    calibration: dict[str, NDArray[np.float64]]
    second_stage: SecondStage | None
    reference: LatentReference | None  # the training latent summary for bias-report drift

    def graph_path(self, graph: str) -> Path:
        return self.directory / self.manifest.graphs[graph].file

    def pipeline(self) -> ScoringPipeline:
        return ScoringPipeline.from_manifest(self.manifest, self.calibration, self.second_stage)


def read_version(name: str, version: str, version_dir: Path) -> VersionFiles:
    """Reads and verifies `version_dir` as model `name` version `version`."""
    manifest, manifest_json = read_manifest(name, version, version_dir)
    return VersionFiles(
        directory=version_dir,
        manifest=manifest,
        manifest_json=manifest_json,
        calibration=read_calibration(version_dir, manifest),
        reference=read_reference(version_dir, manifest),
        second_stage=read_second_stage(version_dir, manifest),
    )


def read_manifest(name: str, version: str, version_dir: Path) -> tuple[Manifest, str]:
    try:
        manifest_json = (version_dir / MANIFEST_FILE).read_text()
        manifest = Manifest.model_validate_json(manifest_json)
    except FileNotFoundError as err:
        raise VersionRefused(f"no {MANIFEST_FILE}") from err
    except (OSError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        raise VersionRefused(f"{MANIFEST_FILE} is not valid: {err}") from err
    if (manifest.name, manifest.version) != (name, version):
        raise VersionRefused(
            f"{MANIFEST_FILE} describes {manifest.name} version {manifest.version}, "
            f"not the directory it is in"
        )
    used = [g.file for g in manifest.graphs.values() if g.file]
    if manifest.scoring is not None:
        used.append(manifest.scoring.calibration.file)
        if manifest.scoring.second_stage is not None:
            used.append(manifest.scoring.second_stage.file)
    if manifest.reference is not None:
        used.append(manifest.reference.file)
    unlisted = sorted(set(used) - set(manifest.sha256))
    if unlisted:
        raise VersionRefused(f"files without a sha256 in {MANIFEST_FILE}: {unlisted}")
    problems = verify_files(version_dir, manifest)
    if problems:
        raise VersionRefused("; ".join(problems))
    return manifest, manifest_json


def read_calibration(version_dir: Path, manifest: Manifest) -> dict[str, NDArray[np.float64]]:
    if manifest.scoring is None:
        return {}
    spec = manifest.scoring.calibration
    try:
        scores = np.load(version_dir / spec.file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise VersionRefused(f"{spec.file} cannot be read: {err}") from err
    expected = (spec.size, len(spec.score_kinds))
    if scores.shape != expected or scores.dtype.kind != "f":
        raise VersionRefused(
            f"{spec.file} holds {list(scores.shape)} {scores.dtype}; the manifest promises "
            f"{list(expected)} float64"
        )
    if not np.isfinite(scores).all():
        raise VersionRefused(f"{spec.file} holds NaN or infinite scores")
    columns = np.sort(scores.astype(np.float64), axis=0)  # sorted once, searched per batch
    return {kind: np.ascontiguousarray(columns[:, i]) for i, kind in enumerate(spec.score_kinds)}


def read_reference(version_dir: Path, manifest: Manifest) -> LatentReference | None:
    """The training latent reference the manifest lists (its sha256 is already verified)."""
    spec = manifest.reference
    if spec is None:
        return None
    try:
        reference = LatentReference.load(version_dir / spec.file)
    except (OSError, ValueError) as err:  # a zip that is not one raises BadZipFile, an OSError
        raise VersionRefused(f"{spec.file} cannot be used: {err}") from err
    latent_dim = manifest.latent.latent_dim if manifest.latent is not None else None
    if reference.latent_dim != latent_dim:
        raise VersionRefused(
            f"{spec.file} describes {reference.latent_dim} latent dimensions; the model has "
            f"{latent_dim}"
        )
    return reference


def read_second_stage(version_dir: Path, manifest: Manifest) -> SecondStage | None:
    spec = manifest.scoring.second_stage if manifest.scoring is not None else None
    if spec is None:
        return None
    if spec.kind != STAGE_KIND:
        raise VersionRefused(f"second stage kind {spec.kind!r} is unknown (this server computes "
                             f"{STAGE_KIND!r})")
    try:
        stage = SecondStage.load(version_dir / spec.file, spec.statistics, spec.combine, spec.k)
    except (OSError, ValueError) as err:
        raise VersionRefused(f"{spec.file} cannot be used: {err}") from err
    latent_dim = manifest.latent.latent_dim if manifest.latent is not None else None
    if "log_latent_knn" in stage.statistics and stage.latent_reference.shape[1] != latent_dim:
        raise VersionRefused(f"{spec.file}: latent reference width differs from the latent_dim")
    if "log_input_knn" in stage.statistics and stage.input_reference.shape[1] != (
        manifest.n_features
    ):
        raise VersionRefused(f"{spec.file}: input reference width differs from the features")
    return stage
