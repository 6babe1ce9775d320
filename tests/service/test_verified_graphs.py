"""Graphs are loaded from the bytes checked against the manifest: a graph swapped after the
check is refused, not served."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

import pytest
from repo_builder import build_version
from server_harness import server_settings

from latentwatch.errors import VersionRefused
from latentwatch.repository.layout import ENCODER_FILE, SCORER_FILE
from latentwatch.service import loader
from latentwatch.service.metrics import ServiceMetrics
from latentwatch.service.ort_runtime import OrtRuntime


def test_a_runtime_with_the_manifest_sha256_loads_only_those_bytes(tmp_path: Path) -> None:
    version_dir = build_version(tmp_path, "m", "1")
    scorer = version_dir / SCORER_FILE
    good = hashlib.sha256(scorer.read_bytes()).hexdigest()
    runtime = OrtRuntime(scorer, 1, sha256=good, max_bytes=2**30)
    runtime.load_blocking()
    assert "score" in [o.name for o in runtime.outputs]
    shutil.copy(version_dir / ENCODER_FILE, scorer)  # a valid graph, not the one listed
    with pytest.raises(VersionRefused, match="does not match manifest"):
        OrtRuntime(scorer, 1, sha256=good, max_bytes=2**30).load_blocking()
    with pytest.raises(VersionRefused, match="more than max_model_file_bytes"):
        OrtRuntime(scorer, 1, sha256=good, max_bytes=100).load_blocking()


def test_a_graph_swapped_after_the_files_were_checked_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version_dir = build_version(tmp_path, "m", "1")
    checked = loader.read_version

    def check_then_swap(*args: object, **kwargs: object) -> object:
        files = checked(*args, **kwargs)  # type: ignore[arg-type]
        shutil.copy(version_dir / ENCODER_FILE, version_dir / SCORER_FILE)
        return files

    monkeypatch.setattr(loader, "read_version", check_then_swap)
    settings = server_settings(tmp_path)
    with pytest.raises(VersionRefused, match="scorer.onnx: sha256 .* does not match"):
        asyncio.run(loader.load_version("m", "1", version_dir, settings, ServiceMetrics()))
