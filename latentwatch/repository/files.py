"""Opening and hashing the files of a version directory: only regular files directly inside it,
none larger than the server allows.

A manifest names its files with safe names (latentwatch.repository.layout.is_safe_name: no
separators, no leading "."), and each is opened with O_NOFOLLOW and checked with fstat, so that
no symbolic link, device or FIFO is ever read, nothing outside the version directory is, and a
listed multi-GB file is refused by its size before a byte of any file is hashed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from latentwatch.errors import VersionRefused, quote
from latentwatch.repository.layout import is_safe_name

DEFAULT_MAX_FILE_BYTES = 4 * 2**30  # the service's max_model_file_bytes default
CHUNK_BYTES = 1 << 20  # hashing reads this much at a time: memory stays flat for any file size
# No symbolic link is followed (the last component; names hold no separators), and opening a
# FIFO does not wait for a writer.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def open_version_file(version_dir: Path, name: str, max_bytes: int) -> BinaryIO:
    """`version_dir / name` opened for reading; VersionRefused, with the reason, for a name that
    is not a plain file name, a missing file, a symbolic link, anything but a regular file, and
    a file larger than `max_bytes`."""
    if not is_safe_name(name):
        raise VersionRefused(f"{quote(name)} is not a file name in the version directory")
    try:
        fd = os.open(version_dir / name, _OPEN_FLAGS)
    except FileNotFoundError:
        raise VersionRefused(f"{name}: missing") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise VersionRefused(
                f"{name} is a symbolic link; only files inside the version directory are read"
            ) from None
        raise VersionRefused(f"{name} cannot be opened: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise VersionRefused(f"{name} is not a regular file")
        if st.st_size > max_bytes:
            raise VersionRefused(
                f"{name} holds {st.st_size:,} bytes, more than max_model_file_bytes "
                f"({max_bytes:,})"
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_version_file(version_dir: Path, name: str, max_bytes: int) -> bytes:
    """The whole of a small file (the manifest, its signature), checked as open_version_file
    does; at most `max_bytes` are read even when the file grows meanwhile."""
    with open_version_file(version_dir, name, max_bytes) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise VersionRefused(f"{name} grew past {max_bytes:,} bytes while it was read")
    return data


def sha256_stream(f: BinaryIO, max_bytes: int | None = None) -> str:
    """The sha256 hex digest of what `f` holds, read in chunks; ValueError past `max_bytes`."""
    digest = hashlib.sha256()
    n_bytes = 0
    for block in iter(lambda: f.read(CHUNK_BYTES), b""):
        n_bytes += len(block)
        if max_bytes is not None and n_bytes > max_bytes:
            raise ValueError(f"more than {max_bytes:,} bytes")
        digest.update(block)
    return digest.hexdigest()


def check_listed_files(
    version_dir: Path, sha256: Mapping[str, str], max_bytes: int
) -> list[str]:
    """Problems with the listed files, in words; empty when every sha256 matches.

    Every file is opened and its size checked before any is hashed, so a version listing one
    file over `max_bytes` is refused at once, however large the others are.
    """
    problems: list[str] = []
    opened: list[tuple[str, str, BinaryIO]] = []
    try:
        for name, expected in sorted(sha256.items()):
            try:
                opened.append((name, expected, open_version_file(version_dir, name, max_bytes)))
            except VersionRefused as err:
                problems.append(str(err))
        if problems:
            return problems
        for name, expected, f in opened:
            try:
                actual = sha256_stream(f, max_bytes)
            except (OSError, ValueError) as err:
                problems.append(f"{name} cannot be hashed: {err}")
                continue
            if actual != expected:
                problems.append(
                    f"{name}: sha256 {actual[:12]}… does not match manifest {expected[:12]}…"
                )
    finally:
        for _, _, f in opened:
            f.close()
    return problems


def read_verified(version_dir: Path, name: str, sha256: str, max_bytes: int) -> bytes:
    """The bytes of a listed file, read once and checked against its sha256 in the manifest, so
    what is used is what was verified (a graph swapped after the check is not loaded)."""
    data = read_version_file(version_dir, name, max_bytes)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise VersionRefused(
            f"{name}: sha256 {actual[:12]}… does not match manifest {sha256[:12]}… "
            "(it changed after the version was checked)"
        )
    return data
