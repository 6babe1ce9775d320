"""Opening a version's files: regular files directly inside it, sizes before any hashing."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from latentwatch.errors import VersionRefused
from latentwatch.repository.files import (
    CHUNK_BYTES,
    check_listed_files,
    open_version_file,
    sha256_stream,
)


def test_a_regular_file_opens_and_hashes_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK_BYTES + 17)
    (tmp_path / "a.bin").write_bytes(data)
    with open_version_file(tmp_path, "a.bin", max_bytes=len(data)) as f:
        assert sha256_stream(f) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("make", "name", "reason"),
    [
        (lambda d: None, "gone.bin", "gone.bin: missing"),
        (lambda d: (d / "link").symlink_to(d.parent / "outside"), "link", "symbolic link"),
        (lambda d: (d / "dangling").symlink_to(d / "nowhere"), "dangling", "symbolic link"),
        (lambda d: (d / "sub").mkdir(), "sub", "not a regular file"),
        (lambda d: os.mkfifo(d / "fifo"), "fifo", "not a regular file"),
        (lambda d: (d / "big.bin").write_bytes(b"x" * 101), "big.bin",
         r"holds 101 bytes, more than max_model_file_bytes \(100\)"),
        (lambda d: None, "../outside", "is not a file name in the version directory"),
        (lambda d: None, "/etc/passwd", "is not a file name in the version directory"),
    ],
    ids=["missing", "symlink", "dangling", "directory", "fifo", "too large", "dotdot", "absolute"],
)
def test_anything_but_a_small_regular_file_inside_is_refused(
    tmp_path: Path, make, name: str, reason: str  # type: ignore[no-untyped-def]
) -> None:
    version_dir = tmp_path / "1"
    version_dir.mkdir()
    (tmp_path / "outside").write_bytes(b"secret")
    make(version_dir)
    started = time.monotonic()
    with pytest.raises(VersionRefused, match=reason):
        open_version_file(version_dir, name, max_bytes=100)
    assert time.monotonic() - started < 5.0  # a FIFO without a writer must not block


def test_sizes_are_checked_before_anything_is_hashed(tmp_path: Path) -> None:
    with (tmp_path / "huge.bin").open("wb") as f:
        f.truncate(64 * 2**30)  # sparse: 64 GiB that would take minutes to hash
    (tmp_path / "small.bin").write_bytes(b"abc")
    listed = {"huge.bin": "0" * 64, "small.bin": "0" * 64}
    started = time.monotonic()
    problems = check_listed_files(tmp_path, listed, max_bytes=2**20)
    assert time.monotonic() - started < 5.0
    assert problems == [
        "huge.bin holds 68,719,476,736 bytes, more than max_model_file_bytes (1,048,576)"
    ]
