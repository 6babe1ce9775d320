"""Where things live in a model repository: every file and directory name, and the one walker.

    <repo>/<model>/config.pbtxt            Triton's model configuration (the newest version)
    <repo>/<model>/<version>/manifest.json written last; lists every other file with its sha256
                             manifest.sig (optional: an ed25519 signature of manifest.json)
                             scorer.onnx  encoder.onnx  decoder.onnx  calibration.npy
                             second_stage.npz (when the manifest has `second_stage`)
                             reference.npz    (when the manifest has `reference`)
    <repo>/<model>/.export-*/              an export in progress, renamed to <version> when done

Version directories have integer names ("1", "2", ..., ordered as numbers; the latest is the
largest). Names starting with "." are hidden: staging directories and temporary files, never
models or versions. Everything else in a model directory is ignored with a warning.

Every name the service reads from the repository (model and version directories, the files a
manifest lists) is a safe name: letters, digits, ".", "_" and "-", not starting with "." (so no
separators, no "..", nothing a log line or a path could be forged with). Directories with other
names, and symbolic links to directories (they lead out of the repository), are skipped with a
warning by the one walker, `find_versions` (once per directory and process: a server polls its
repository every few seconds).
Pure pathlib (and errors.quote): the serving path and export both import it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from latentwatch.errors import quote

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
CALIBRATION_FILE = "calibration.npy"
SECOND_STAGE_FILE = "second_stage.npz"
REFERENCE_FILE = "reference.npz"
EXPLAIN_FILE = "explain.npz"  # per-feature statistics for explanations (optional)
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


MAX_NAME_CHARS = 128
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
# Integers without leading zeros ("007" and "7" would be one version twice), ASCII digits only.
_VERSION_NAME = re.compile(r"0|[1-9][0-9]{0,17}")


def is_hidden(name: str) -> bool:
    """Staging directories and temporary files: never a model or a version."""
    return name.startswith(HIDDEN_PREFIX)


def is_safe_name(name: str) -> bool:
    """A model, version or file name the service reads: [A-Za-z0-9._-], no leading ".", at most
    MAX_NAME_CHARS characters."""
    return len(name) <= MAX_NAME_CHARS and _SAFE_NAME.fullmatch(name) is not None


def is_version_name(name: str) -> bool:
    """Version directories are integers: "1", "2", ... (hidden names never are)."""
    return _VERSION_NAME.fullmatch(name) is not None


def hidden_temp(name: str) -> str:
    """A hidden sibling to write before renaming over `name` (atomic replace)."""
    return f"{HIDDEN_PREFIX}{name}.tmp"


def _child_dirs(parent: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """(directories to use, [(name, why it is skipped)]) of `parent`, by name; hidden entries
    and files are left out silently."""
    usable: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for path in sorted(parent.iterdir()):
        if is_hidden(path.name) or not path.is_dir():
            continue
        if path.is_symlink():
            skipped.append((path.name, "a symbolic link (it leads out of the repository)"))
        elif not is_safe_name(path.name):
            skipped.append((path.name, "not a safe name (letters, digits, '.', '_' and '-')"))
        else:
            usable.append(path)
    return usable, skipped


def model_dirs(repo: Path) -> list[Path]:
    """<repo>/<model>/ for every visible directory with a safe name, by name."""
    return _child_dirs(repo)[0]


def version_dirs(model_dir: Path) -> list[Path]:
    """<model>/<integer>/ directories, versions ascending as numbers."""
    found = (p for p in _child_dirs(model_dir)[0] if is_version_name(p.name))
    return sorted(found, key=lambda p: int(p.name))


_warned: set[tuple[Path, str]] = set()  # (directory, warning) already logged by this process


def _warn_once(path: Path, message: str) -> None:
    if (path, message) not in _warned:
        _warned.add((path, message))
        log.warning("%s", message)


def find_versions(repo: Path) -> list[tuple[str, str, Path]]:
    """(model, version, directory) for every <repo>/<model>/<integer>/, versions ascending.

    Warns, once per directory, about each directory it skips (an unsafe name or a symbolic link,
    in the repository or a model directory), each other visible directory in a model directory,
    each model directory it cannot list, and each model directory without versions.
    """
    found: list[tuple[str, str, Path]] = []
    models, skipped = _child_dirs(repo)
    for name, why in skipped:
        _warn_once(repo / name, f"skipping model directory {quote(name)}: {why}")
    for model_dir in models:
        try:
            children, skipped = _child_dirs(model_dir)
        except OSError as err:
            _warn_once(model_dir, f"skipping model directory {quote(model_dir.name)}: {err}")
            continue
        for name, why in skipped:
            _warn_once(model_dir / name, f"skipping {model_dir.name}/{quote(name)}: {why}")
        for other in (p for p in children if not is_version_name(p.name)):
            _warn_once(other, f"ignoring {model_dir.name}/{other.name}: version directories are "
                       "integers")
        versions = sorted((p for p in children if is_version_name(p.name)),
                          key=lambda p: int(p.name))
        if not versions:
            _warn_once(model_dir, f"model directory {model_dir} holds no version directories")
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
