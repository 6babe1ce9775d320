"""Recalibration without retraining: new normal rows -> a new version with a new calibration.

The new version is the next free version number of the model; the version it comes from is
never touched. Every file but the calibration scores and the manifest is copied byte for byte
(graphs, second stage, reference); `calibration.npy` is recomputed with the version's own
scoring (ONNX Runtime on its scorer graph and the one scoring pipeline, as export calibrates);
the manifest keeps everything else, including the training provenance, and gains a note of
the recalibration. Staged, published and described to Triton exactly as export does.

Torch-free: a serving install (onnxruntime, numpy, pydantic) can recalibrate.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from latentwatch.data.columns import column_order
from latentwatch.errors import LatentwatchError
from latentwatch.export.calibration import calibration_scores, too_few_rows, warn_if_small
from latentwatch.export.errors import ExportError
from latentwatch.export.explain_fit import write_explain
from latentwatch.export.publish import make_staging, publish
from latentwatch.export.sessions import cpu_session
from latentwatch.export.triton import write_triton_config
from latentwatch.repository.layout import EXPLAIN_FILE, MANIFEST_FILE, version_dirs
from latentwatch.repository.manifest import Manifest, sha256_file
from latentwatch.repository.manifest_groups import GroupCalibration, groups_array
from latentwatch.repository.reader import VersionFiles, read_version, validation_reason
from latentwatch.scoring.contract import InputContract, validate_rows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recalibrated:
    """What `recalibrate` published."""

    version_dir: Path
    from_version: str
    n_rows: int


def source_version(repo: Path, model: str, version: str = "") -> Path:
    """<repo>/<model>/<version>/ (the latest when `version` is empty); ExportError if absent."""
    model_dir = repo / model
    versions = version_dirs(model_dir) if model_dir.is_dir() else []
    if not versions:
        raise ExportError(f"{model_dir}: no model {model!r} with versions in {repo}")
    if not version:
        return versions[-1]
    for version_dir in versions:
        if version_dir.name == version:
            return version_dir
    names = ", ".join(p.name for p in versions)
    raise ExportError(f"{model} has no version {version!r} (it has {names})")


def recalibrate(
    repo: Path,
    model: str,
    rows: NDArray,
    *,
    source: str,
    version: str = "",
    default_alpha: float | None = None,
    feature_names: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    group_column: str = "",
) -> Recalibrated:
    """Publish the next version of `model` with `rows` (normal rows, raw units) as calibration.

    `source` names where the rows came from, for the manifest. `default_alpha` defaults to the
    source version's. Rows with `feature_names` (a CSV header) are put in the model's column
    order by name, as scoring does; unnamed rows are taken by position. With `groups` (one
    per row, from the column `group_column`), the version also keeps each row's group, for
    group-conditional p-values (latentwatch.scoring.mondrian). Refuses (ExportError,
    InvalidInput) a version that does not score, rows the version would not accept, and fewer
    rows than `default_alpha` needs (in any group); nothing is published then.
    """
    started_s = time.perf_counter()
    version_dir = source_version(Path(repo), model, version)
    try:
        files = read_version(model, version_dir.name, version_dir)
    except LatentwatchError as err:
        raise ExportError(f"{model} version {version_dir.name} cannot be used: {err}") from err
    scoring = files.manifest.scoring
    if scoring is None:
        raise ExportError(f"{model} version {version_dir.name} does not score: nothing to "
                          "recalibrate")
    alpha = scoring.calibration.default_alpha if default_alpha is None else default_alpha
    if not 0.0 < alpha < 1.0:
        raise ExportError(f"default_alpha must be in (0, 1), got {alpha}")
    array = np.asarray(rows)
    order = column_order(feature_names, files.manifest.input.feature_names, source)
    if order is not None and array.ndim == 2:
        array = array[:, order]
    contract = InputContract.from_manifest(files.manifest, max(1, len(array)))
    checked = validate_rows(array, contract, what=f"recalibration rows ({source})")
    problem = too_few_rows(len(checked), alpha)
    if problem:
        raise ExportError(f"{problem}; nothing was published")
    grouping = None if groups is None else row_groups(groups, group_column, len(checked), alpha)
    logger.info("recalibrating %s version %s on %d rows of %s", model, version_dir.name,
                len(checked), source)
    scores = calibration_scores(
        cpu_session(files.graph_path("scorer")), checked, list(scoring.calibration.score_kinds),
        files.second_stage, files.manifest.input.preprocessing,
    )
    if not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores)).any(axis=1).sum())
        raise ExportError(f"recalibration: {bad} rows got non-finite scores; nothing was published")
    warn_if_small(len(scores), alpha)

    model_dir = version_dir.parent
    staging = make_staging(model_dir)
    try:
        _stage(files, staging, scores, checked, grouping)
        write_manifest = _manifest_writer(files, staging, source, len(scores), alpha, grouping)
        new_dir = publish(staging, model_dir, write_manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_triton_config(model_dir, Manifest.read(new_dir))
    logger.info("recalibrated %s version %s as version %s in %.1f s: %s", model,
                version_dir.name, new_dir.name, time.perf_counter() - started_s, new_dir)
    return Recalibrated(new_dir, version_dir.name, len(scores))


def row_groups(
    groups: Sequence[str], column: str, n_rows: int, alpha: float
) -> tuple[GroupCalibration, NDArray[np.str_]]:
    """The manifest's description of the rows' groups and the array to store; ExportError for
    a count that differs from the rows or a group too small for alpha."""
    if len(groups) != n_rows:
        raise ExportError(f"{len(groups)} groups for {n_rows} rows; nothing was published")
    array = groups_array([str(g) for g in groups])
    try:
        spec = GroupCalibration.of(column, array)
    except ValidationError as err:
        raise ExportError(f"group column {column!r} cannot be used: {validation_reason(err)}; "
                          "nothing was published") from err
    for name, size in zip(spec.groups, spec.sizes, strict=True):
        problem = too_few_rows(size, alpha)
        if problem:
            raise ExportError(f"group {name!r}: {problem}; nothing was published")
        warn_if_small(size, alpha)
    return spec, array


def _stage(
    files: VersionFiles, staging: Path, scores: NDArray[np.float64], rows: NDArray[np.float32],
    grouping: tuple[GroupCalibration, NDArray[np.str_]] | None,
) -> None:
    """Every listed file but the calibration, its groups and explain.npz, copied byte for byte;
    the new calibration (and its groups), and the explanation statistics of the new rows."""
    manifest = files.manifest
    calibration = manifest.require_scoring().calibration
    skipped = {calibration.file, MANIFEST_FILE}
    if calibration.groups is not None:
        skipped.add(calibration.groups.file)
    if files.explain is not None:
        skipped.add(EXPLAIN_FILE)
    for name, digest in sorted(manifest.sha256.items()):
        if name in skipped:
            continue
        shutil.copyfile(files.directory / name, staging / name)
        if sha256_file(staging / name) != digest:  # read_version verified the source just now
            raise ExportError(f"{name} changed while it was copied; nothing was published")
    np.save(staging / calibration.file, scores, allow_pickle=False)
    if grouping is not None:
        np.save(staging / grouping[0].file, grouping[1], allow_pickle=False)
    if files.explain is not None:
        write_explain(files.directory, rows, manifest.input.preprocessing,
                      files.explain.statistic, staging)


def _manifest_writer(
    files: VersionFiles, staging: Path, source: str, n_rows: int, alpha: float,
    grouping: tuple[GroupCalibration, NDArray[np.str_]] | None,
) -> Callable[[str], None]:
    """The manifest writer publish calls with the claimed version: the source version's
    manifest with the new calibration, a recalibration note and every file's sha256."""
    now = datetime.now(UTC)
    from_version = files.manifest.version
    split = (f"{n_rows} rows of {source} given to `latentwatch recalibrate` on "
             f"{now.date().isoformat()} (recalibrating version {from_version})")
    note = {"from_version": from_version, "data": source, "n_rows": n_rows,
            "recalibrated_at": now.isoformat(timespec="seconds")}

    def write_manifest(version: str) -> None:
        data = files.manifest.model_dump(mode="json")
        calibration = data["scoring"]["calibration"]
        calibration.update(size=n_rows, split=split, default_alpha=alpha,
                           groups=None if grouping is None else grouping[0].model_dump())
        provenance = data["provenance"]
        provenance["recalibrations"] = [*provenance.get("recalibrations", []), note]
        data.update(
            version=version,
            sha256={
                p.name: sha256_file(p)
                for p in sorted(staging.iterdir())
                if p.is_file() and p.name != MANIFEST_FILE
            },
            created_at=now.isoformat(timespec="seconds"),
        )
        try:
            manifest = Manifest.model_validate(data)
        except ValidationError as err:
            raise ExportError(f"the recalibrated manifest would be invalid: {err}") from err
        (staging / MANIFEST_FILE).write_text(manifest.to_json())

    return write_manifest
