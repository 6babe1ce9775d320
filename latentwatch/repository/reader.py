"""Reading one model version from the repository, verified: what the server and offline scoring
load before any graph runs (torch-free, no onnxruntime).

A version is refused (VersionRefused, with the reason) when its manifest is unreadable, invalid
or describes another directory, its signature does not satisfy the ReadPolicy, a file is not a
regular file of the version directory within the size limit, does not match its sha256 (or is
not listed at all), or the calibration scores, the latent reference or the second stage do not
fit the manifest. Whatever the files hold, reading them gives a VersionFiles or a refusal.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from latentwatch.bias.drift import LatentReference
from latentwatch.errors import VersionRefused, quote
from latentwatch.repository.files import (
    DEFAULT_MAX_FILE_BYTES,
    open_version_file,
    read_version_file,
)
from latentwatch.repository.layout import EXPLAIN_FILE, MANIFEST_FILE, SIGNATURE_FILE
from latentwatch.repository.manifest import Manifest, verify_files
from latentwatch.repository.manifest_groups import split_by_group
from latentwatch.repository.signing import MAX_SIGNATURE_BYTES, TrustedKeys, check_signature
from latentwatch.scoring.explain import ExplainStats
from latentwatch.scoring.pipeline import ScoringPipeline
from latentwatch.scoring.second_stage import KIND as STAGE_KIND
from latentwatch.scoring.second_stage import SecondStage

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 64 * 2**20  # a 2**22-feature preprocessing fits
MAX_REASONS = 5  # validation errors a refusal lists


@dataclass(frozen=True)
class ReadPolicy:
    """What a version must satisfy besides its sha256s: the service's settings, or these
    defaults (no signatures checked) for offline scoring and recalibration."""

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    signing_keys: Path | None = None  # a signing keys file (latentwatch.repository.signing)
    require_signed: bool = False


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
    signed_by: str | None = None  # the trusted key id whose signature verified
    explain: ExplainStats | None = None  # explain.npz; None: the version does not explain
    # group -> kind -> ascending calibration scores; empty without a group column.
    group_calibration: dict[str, dict[str, NDArray[np.float64]]] = field(default_factory=dict)

    def graph_path(self, graph: str) -> Path:
        return self.directory / self.manifest.graphs[graph].file

    def pipeline(self) -> ScoringPipeline:
        return ScoringPipeline.from_manifest(self.manifest, self.calibration, self.second_stage,
                                             self.group_calibration)


def read_version(
    name: str, version: str, version_dir: Path, policy: ReadPolicy | None = None
) -> VersionFiles:
    """Reads and verifies `version_dir` as model `name` version `version`."""
    policy = policy or ReadPolicy()
    manifest, manifest_json, signed_by = read_manifest(name, version, version_dir, policy)
    calibration, group_calibration = read_calibration(version_dir, manifest,
                                                      policy.max_file_bytes)
    return VersionFiles(
        directory=version_dir,
        manifest=manifest,
        manifest_json=manifest_json,
        calibration=calibration,
        group_calibration=group_calibration,
        reference=read_reference(version_dir, manifest, policy.max_file_bytes),
        second_stage=read_second_stage(version_dir, manifest, policy.max_file_bytes),
        signed_by=signed_by,
        explain=read_explain(version_dir, manifest, policy.max_file_bytes),
    )


def read_manifest(
    name: str, version: str, version_dir: Path, policy: ReadPolicy | None = None
) -> tuple[Manifest, str, str | None]:
    """(manifest, its JSON, the trusted key id that signed it) once the signature, the manifest
    and every listed file's size and sha256 are checked."""
    policy = policy or ReadPolicy()
    if not os.path.lexists(version_dir / MANIFEST_FILE):
        raise VersionRefused(f"no {MANIFEST_FILE}")
    raw = read_version_file(version_dir, MANIFEST_FILE,
                            min(MAX_MANIFEST_BYTES, policy.max_file_bytes))
    # The signature first: a manifest that must be signed is not even parsed unless it is.
    signed_by = _check_signature(name, version, version_dir, raw, policy)
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as err:
        raise VersionRefused(f"{MANIFEST_FILE} is not valid: {validation_reason(err)}") from err
    manifest_json = raw.decode("utf-8")  # valid JSON: valid UTF-8
    if (manifest.name, manifest.version) != (name, version):
        raise VersionRefused(
            f"{MANIFEST_FILE} describes {manifest.name} version {manifest.version}, "
            f"not the directory it is in"
        )
    used = [g.file for g in manifest.graphs.values() if g.file]
    if manifest.scoring is not None:
        used.append(manifest.scoring.calibration.file)
        if manifest.scoring.calibration.groups is not None:
            used.append(manifest.scoring.calibration.groups.file)
        if manifest.scoring.second_stage is not None:
            used.append(manifest.scoring.second_stage.file)
    if manifest.reference is not None:
        used.append(manifest.reference.file)
    unlisted = sorted(set(used) - set(manifest.sha256))
    if unlisted:
        raise VersionRefused(f"files without a sha256 in {MANIFEST_FILE}: {unlisted}")
    problems = verify_files(version_dir, manifest, policy.max_file_bytes)
    if problems:
        raise VersionRefused("; ".join(problems))
    return manifest, manifest_json, signed_by


def _check_signature(
    name: str, version: str, version_dir: Path, manifest_bytes: bytes, policy: ReadPolicy
) -> str | None:
    keys = None
    if policy.signing_keys is not None:
        try:
            keys = TrustedKeys.read(policy.signing_keys)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise VersionRefused(f"the signing_keys file cannot be used: {err}") from err
    signature = None
    if os.path.lexists(version_dir / SIGNATURE_FILE):
        signature = read_version_file(version_dir, SIGNATURE_FILE, MAX_SIGNATURE_BYTES)
    signed_by = check_signature(manifest_bytes, signature, keys, policy.require_signed)
    if signed_by is None and keys is not None:
        log.warning("model %s version %s is unsigned (no %s); it loads because require_signed "
                    "is off", name, version, SIGNATURE_FILE)
    return signed_by


def validation_reason(err: ValidationError) -> str:
    """A ValidationError in one line: where and what, for the first few errors (any string
    from the file quoted)."""
    errors = err.errors(include_url=False, include_input=False)
    parts = [f"{_location(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
             for e in errors[:MAX_REASONS]]
    if len(errors) > MAX_REASONS:
        parts.append(f"and {len(errors) - MAX_REASONS} more")
    return " ".join("; ".join(parts).split())  # no newline reaches a log line


def _location(loc: tuple[int | str, ...]) -> str:
    shown = [
        str(p) if isinstance(p, int) or p.isidentifier() else quote(p)
        for p in loc if p != "[key]"  # pydantic's marker of a dict key that is wrong
    ]
    return ".".join(shown) or "the manifest"


def read_calibration(
    version_dir: Path, manifest: Manifest, max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> tuple[dict[str, NDArray[np.float64]], dict[str, dict[str, NDArray[np.float64]]]]:
    """(kind -> ascending calibration scores, group -> kind -> that group's, empty without a
    group column)."""
    if manifest.scoring is None:
        return {}, {}
    spec = manifest.scoring.calibration
    scores = _read_npy(version_dir, spec.file, (spec.size, len(spec.score_kinds)), "f",
                       max_bytes)
    if not np.isfinite(scores).all():
        raise VersionRefused(f"{spec.file} holds NaN or infinite scores")
    by_group = {}
    if spec.groups is not None:
        groups = _read_npy(version_dir, spec.groups.file, (spec.size,), "U", max_bytes)
        by_group = split_by_group(spec.groups, scores, groups, spec.score_kinds)
    columns = np.sort(scores.astype(np.float64), axis=0)  # sorted once, searched per batch
    marginal = {kind: np.ascontiguousarray(columns[:, i])
                for i, kind in enumerate(spec.score_kinds)}
    return marginal, by_group


def _read_npy(
    version_dir: Path, name: str, shape: tuple[int, ...], dtype_kind: str, max_bytes: int
) -> NDArray:
    """An .npy file of the version of `shape` and dtype kind ("f": float, "U": unicode)."""
    with open_version_file(version_dir, name, max_bytes) as f:
        # The header first: the shape it declares is checked before an array is allocated.
        found, dtype = _npy_header(f, name)
        if found != shape or dtype.kind != dtype_kind:
            promised = "float64" if dtype_kind == "f" else "unicode strings"
            raise VersionRefused(
                f"{name} holds {list(found)} {dtype}; the manifest promises {list(shape)} "
                f"{promised}"
            )
        f.seek(0)
        try:
            return np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise VersionRefused(f"{name} cannot be read: {_one_line(err)}") from err


def _npy_header(f: BinaryIO, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from an .npy file's header; VersionRefused for anything else."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format {version} is not read here (1.0 and 2.0 are)")
    except (OSError, ValueError, EOFError) as err:
        f.seek(0)
        what = "a zip archive (.npz)" if f.read(2) == b"PK" else _one_line(err)
        raise VersionRefused(f"{name} is not an .npy array: {what}") from err
    return tuple(shape), np.dtype(dtype)


def _check_archive(version_dir: Path, name: str, max_bytes: int) -> None:
    """VersionRefused unless `name` is a zip archive (.npz) whose members unpack to at most
    `max_bytes` in all: a small, highly compressed file cannot fill the memory."""
    with open_version_file(version_dir, name, max_bytes) as f:
        try:
            with zipfile.ZipFile(f) as archive:
                unpacked = sum(member.file_size for member in archive.infolist())
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise VersionRefused(
                f"{name} cannot be used: not an .npz archive ({_one_line(err)})"
            ) from err
    if unpacked > max_bytes:
        raise VersionRefused(f"{name} cannot be used: it unpacks to {unpacked:,} bytes, more "
                             f"than max_model_file_bytes ({max_bytes:,})")


def read_reference(
    version_dir: Path, manifest: Manifest, max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> LatentReference | None:
    """The training latent reference the manifest lists (its sha256 is already verified)."""
    spec = manifest.reference
    if spec is None:
        return None
    _check_archive(version_dir, spec.file, max_bytes)
    try:
        reference = LatentReference.load(version_dir / spec.file)
    except Exception as err:  # numpy's errors for odd arrays vary (TypeError, KeyError, ...)
        raise VersionRefused(f"{spec.file} cannot be used: {_one_line(err)}") from err
    latent_dim = manifest.latent.latent_dim if manifest.latent is not None else None
    if reference.latent_dim != latent_dim:
        raise VersionRefused(
            f"{spec.file} describes {reference.latent_dim} latent dimensions; the model has "
            f"{latent_dim}"
        )
    return reference


def read_second_stage(
    version_dir: Path, manifest: Manifest, max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> SecondStage | None:
    spec = manifest.scoring.second_stage if manifest.scoring is not None else None
    if spec is None:
        return None
    if spec.kind != STAGE_KIND:
        raise VersionRefused(f"second stage kind {spec.kind!r} is unknown (this server computes "
                             f"{STAGE_KIND!r})")
    _check_archive(version_dir, spec.file, max_bytes)
    try:
        stage = SecondStage.load(version_dir / spec.file, spec.statistics, spec.combine, spec.k)
    except Exception as err:  # numpy's errors for odd arrays vary (TypeError, KeyError, ...)
        raise VersionRefused(f"{spec.file} cannot be used: {_one_line(err)}") from err
    latent_dim = manifest.latent.latent_dim if manifest.latent is not None else None
    if "log_latent_knn" in stage.statistics and stage.latent_reference.shape[1] != latent_dim:
        raise VersionRefused(f"{spec.file}: latent reference width differs from the latent_dim")
    if "log_input_knn" in stage.statistics and stage.input_reference.shape[1] != (
        manifest.n_features
    ):
        raise VersionRefused(f"{spec.file}: input reference width differs from the features")
    return stage


def read_explain(
    version_dir: Path, manifest: Manifest, max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> ExplainStats | None:
    """The explanation statistics when the version lists explain.npz (older ones do not)."""
    if EXPLAIN_FILE not in manifest.sha256 or manifest.scoring is None:
        return None
    _check_archive(version_dir, EXPLAIN_FILE, max_bytes)
    try:
        return ExplainStats.load(version_dir / EXPLAIN_FILE, manifest.n_features)
    except Exception as err:  # numpy's errors for odd arrays vary (TypeError, KeyError, ...)
        raise VersionRefused(f"{EXPLAIN_FILE} cannot be used: {_one_line(err)}") from err


def _one_line(err: Exception) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())
