"""Publishing a staged version: the next free version number, manifest written last, one rename.

Export writes every file of a version into a hidden staging directory beside the versions
(<repo>/<model>/.export-XXXX), so the service never sees half a version and a failed export
leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from latentwatch.export.errors import ExportError
from latentwatch.repository.layout import MANIFEST_FILE, STAGING_PREFIX, next_version
from latentwatch.repository.manifest import sha256_file

# Model names become directory names and Triton model names.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PUBLISH_ATTEMPTS = 5


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ExportError(f"model name {name!r}: use letters, digits, '.', '_' and '-' only")


def make_staging(model_dir: Path) -> Path:
    """A fresh hidden staging directory inside `model_dir`."""
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=model_dir))


def stage_and_publish(
    model_dir: Path, build: Callable[[Path], Callable[[str], None]]
) -> Path:
    """Publish one new version of `model_dir`; returns its directory.

    `build(staging)` writes every file but the manifest into a fresh staging directory and
    returns the manifest writer. On any failure the staging directory, and a model directory
    this call created, are removed: nothing half-made stays behind.
    """
    created_model_dir = not model_dir.exists()
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = make_staging(model_dir)
    try:
        return publish(staging, model_dir, build(staging))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_model_dir:
            remove_if_empty(model_dir)
        raise


def staged_sha256(staging: Path) -> dict[str, str]:
    """The manifest's sha256 section: every file already in `staging` but the manifest."""
    return {
        p.name: sha256_file(p)
        for p in sorted(staging.iterdir())
        if p.is_file() and p.name != MANIFEST_FILE
    }


def publish(staging: Path, model_dir: Path, write_manifest: Callable[[str], None]) -> Path:
    """Rename the finished staging directory to the next free version, manifest written last.

    Another export of the same model may take the version first; then the next one is tried.
    """
    staging.chmod(0o755)  # mkdtemp makes it private; the service may run as another user
    for _ in range(_PUBLISH_ATTEMPTS):
        version = next_version(model_dir)
        target = model_dir / version
        write_manifest(version)
        if target.exists():
            continue
        try:
            os.rename(staging, target)  # atomic within one filesystem
        except OSError:
            if target.exists():
                continue
            raise
        return target
    raise ExportError(
        f"{model_dir}: could not claim a free version after {_PUBLISH_ATTEMPTS} tries"
    )


def remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
