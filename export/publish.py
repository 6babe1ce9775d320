"""Publishing a staged version: the next free version number, manifest written last, one rename.

Export writes every file of a version into a hidden staging directory beside the versions
(<repo>/<model>/.export-XXXX), so the service never sees half a version and a failed export
leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from latentwatch.export.errors import ExportError
from latentwatch.repository.layout import STAGING_PREFIX, next_version

# Model names become directory names and Triton model names.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PUBLISH_ATTEMPTS = 5


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ExportError(f"model name {name!r}: use letters, digits, '.', '_' and '-' only")


def make_staging(model_dir: Path) -> Path:
    """A fresh hidden staging directory inside `model_dir`."""
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=model_dir))


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
