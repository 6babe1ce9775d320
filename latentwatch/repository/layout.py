"""Where things live in a model repository: every file and directory name, and the one walker.

    <repo>/<model>/config.pbtxt            Triton's model configuration (the newest version)
    <repo>/<model>/<version>/manifest.json written last; lists every other file with its sha256
                             scorer.onnx  encoder.onnx  decoder.onnx  calibration.npy
                             second_stage.npz (when the manifest has `second_stage`)
                             reference.npz    (when the manifest has `reference`)
    <repo>/<model>/.export-*/              an export in progress, renamed to <version> when done

Version directories have integer names ("1", "2", ..., ordered as numbers; the latest is the
largest). Names starting with "." are hidden: staging directories and temporary files, never
models or versions. Everything else in a model directory is ignored with a warning.
Pure pathlib: the serving path and export both import it.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
CALIBRATION_FILE = "calibration.npy"
SECOND_STAGE_FILE = "second_stage.npz"
REFERENCE_FILE = "reference.npz"
TRITON_CONFIG_FILE = "config.pbtxt"
GRAPH_SUFFIX = ".onnx"
# Export stages a version in <model>/<STAGING_PREFIX>XXXX and renames it into place.
STAGING_PREFIX = ".export-"
HIDDEN_PREFIX = "."


def graph_file(graph: str) -> str:
    """The file of one graph ("scorer", "encoder", "decoder") in a version directory."""
    return f"{graph}{GRAPH_SUFFIX}"


SCORER_FILE = graph_file("scorer")
ENCODER_FILE = graph_file("encoder")
DECODER_FILE = graph_file("decoder")


def is_hidden(name: str) -> bool:
    """Staging directories and temporary files: never a model or a version."""
    return name.startswith(HIDDEN_PREFIX)


def is_version_name(name: str) -> bool:
    """Version directories are integers: "1", "2", ... (hidden names never are)."""
    return name.isdigit()


def hidden_temp(name: str) -> str:
    """A hidden sibling to write before renaming over `name` (atomic replace)."""
    return f"{HIDDEN_PREFIX}{name}.tmp"


def _visible_dirs(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if p.is_dir() and not is_hidden(p.name)]


def model_dirs(repo: Path) -> list[Path]:
    """<repo>/<model>/ for every visible directory, by name."""
    return sorted(_visible_dirs(repo))


def version_dirs(model_dir: Path) -> list[Path]:
    """<model>/<integer>/ directories, versions ascending as numbers."""
    found = (p for p in _visible_dirs(model_dir) if is_version_name(p.name))
    return sorted(found, key=lambda p: int(p.name))


def find_versions(repo: Path) -> list[tuple[str, str, Path]]:
    """(model, version, directory) for every <repo>/<model>/<integer>/, versions ascending.

    Logs a warning for each other visible directory in a model directory and for each model
    directory without versions.
    """
    found: list[tuple[str, str, Path]] = []
    for model_dir in model_dirs(repo):
        others = (p.name for p in _visible_dirs(model_dir) if not is_version_name(p.name))
        for ignored in sorted(others):
            log.warning("ignoring %s/%s: version directories are integers", model_dir.name, ignored)
        versions = version_dirs(model_dir)
        if not versions:
            log.warning("model directory %s holds no version directories", model_dir)
        found.extend((model_dir.name, p.name, p) for p in versions)
    return found


def published_versions(repo: Path) -> list[Path]:
    """Version directories with a manifest (an export finished there); [] without a repo."""
    if not repo.is_dir():
        return []
    return [
        version_dir
        for model_dir in model_dirs(repo)
        for version_dir in version_dirs(model_dir)
        if (version_dir / MANIFEST_FILE).is_file()
    ]


def next_version(model_dir: Path) -> str:
    """The next free integer version under <repo>/<model>/ (1 in an empty or new directory)."""
    existing = [int(p.name) for p in version_dirs(model_dir)] if model_dir.is_dir() else []
    return str(max(existing, default=0) + 1)
