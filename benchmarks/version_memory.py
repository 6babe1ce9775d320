"""The server's memory against the number of loaded model versions (part of throughput.py).

One exported version is copied into versions 1..N of a fresh repository (its manifest's version
field rewritten, every other file byte for byte, so each copy verifies as its own version) and
`latentwatch serve` loads them all. The server's resident memory (psutil, the whole process tree)
is read once it is SERVING, and again after one 256-row Score on every version, which grows
each version's ONNX Runtime arenas to their working size.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from numpy.typing import NDArray
from processes import start_latentwatch

from latentwatch.client.client import LatentwatchClient
from latentwatch.repository.layout import MANIFEST_FILE

logger = logging.getLogger("throughput")

VERSION_COUNTS = (1, 10, 50)
SCORE_ROWS = 256
MB = 1024 * 1024


def copy_versions(version_dir: Path, repo: Path, n: int) -> str:
    """Writes <repo>/<model>/1..n from one exported version; returns the model name."""
    name = version_dir.parent.name
    manifest = json.loads((version_dir / MANIFEST_FILE).read_text())
    for version in range(1, n + 1):
        target = repo / name / str(version)
        shutil.copytree(version_dir, target)
        manifest["version"] = str(version)
        (target / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return name


def tree_rss_bytes(pid: int) -> int:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def _one_count(version_dir: Path, X: NDArray[np.float32], n: int, work: Path,
               threads: int) -> dict[str, Any]:
    repo = work / f"versions-{n}"
    name = copy_versions(version_dir, repo, n)
    disk_mb = sum(f.stat().st_size for f in repo.rglob("*") if f.is_file()) / MB
    server, target, ready_s = start_latentwatch(repo, work / f"versions-{n}.log", threads)
    with server:
        rss_ready = tree_rss_bytes(server.pid)
        with LatentwatchClient(target) as client:
            (summary,) = [m for m in client.list_models() if m.name == name]
            if len(summary.versions) != n:
                raise RuntimeError(f"the server loaded {len(summary.versions)} of {n} versions; "
                                   f"log tail:\n{server.log_tail()}")
            score_start_s = time.perf_counter()
            for version in summary.versions:
                result = client.score(name, X[:SCORE_ROWS], version=version)
                assert len(result) == SCORE_ROWS
            score_s = time.perf_counter() - score_start_s
        rss_scored = tree_rss_bytes(server.pid)
        server.check_alive()
    shutil.rmtree(repo)
    return {
        "versions": n,
        "rss_at_ready_mb": rss_ready / MB,
        "rss_after_scoring_each_mb": rss_scored / MB,
        "ready_s": ready_s,
        "score_each_s": score_s,
        "repository_mb": disk_mb,
    }


def measure_version_memory(version_dir: Path, X: NDArray[np.float32], work: Path,
                           threads: int, counts: Sequence[int] = VERSION_COUNTS
                           ) -> dict[str, Any]:
    """RSS with each count of loaded versions, one server per count, one after the other."""
    rows = []
    for n in counts:
        logger.info("measuring memory with %d loaded versions", n)
        rows.append(_one_count(version_dir, X, n, work, threads))
    per_version = None
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        per_version = ((last["rss_after_scoring_each_mb"] - first["rss_after_scoring_each_mb"])
                       / (last["versions"] - first["versions"]))
    return {
        "model_version": f"{version_dir.parent.name}/{version_dir.name}",
        "what": "one exported version copied to versions 1..N; RSS of the server's process "
                "tree at SERVING and after one 256-row Score on every version",
        "counts": rows,
        "mb_per_extra_version": per_version,
    }
