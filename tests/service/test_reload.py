"""Hot reload (service/reload.py) on a real repository of synthetic versions, no server."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from repo_builder import build_version

from latentwatch.errors import ModelNotFound, NotReady
from latentwatch.repository.layout import CALIBRATION_FILE, MANIFEST_FILE, find_versions
from latentwatch.service.loader import load_repository
from latentwatch.service.metrics import ServiceMetrics
from latentwatch.service.reload import RepositoryWatcher, fingerprint
from latentwatch.service.repository import ModelRepository
from latentwatch.service.settings import Settings

T = TypeVar("T")


def _settings(repo: Path) -> Settings:
    return Settings(repo=repo, port=0, metrics_port=0, reload_interval_s=0, shutdown_grace_s=2)


def _run(repo: Path, body: Callable[[RepositoryWatcher, ModelRepository], Awaitable[T]]) -> T:
    async def main() -> T:
        settings = _settings(repo)
        metrics = ServiceMetrics()
        repository = await load_repository(repo, find_versions(repo), settings, metrics)
        watcher = RepositoryWatcher(settings, repository, metrics, None)
        await watcher.adopt()
        try:
            return await body(watcher, repository)
        finally:
            await watcher.stop()
            await repository.close()

    return asyncio.run(main())


def _served(repository: ModelRepository) -> dict[str, list[str]]:
    return {name: list(versions) for name, versions in repository.versions.items()}


def test_new_version_loads_and_latest_moves(tmp_path: Path) -> None:
    build_version(tmp_path, "m", "1")

    async def body(watcher: RepositoryWatcher, repository: ModelRepository) -> None:
        assert (await watcher.reload()).changed is False
        build_version(tmp_path, "m", "2", seed=3)
        report = await watcher.reload()
        assert report.loaded == [("m", "2")]
        assert _served(repository) == {"m": ["1", "2"]}
        assert repository.get("m").version == "2"

    _run(tmp_path, body)


def test_removed_version_is_unloaded_once_its_calls_end(tmp_path: Path) -> None:
    build_version(tmp_path, "m", "1")
    build_version(tmp_path, "m", "2")

    async def body(watcher: RepositoryWatcher, repository: ModelRepository) -> None:
        old = repository.get("m", "2")
        with old.lease():  # a call holding version 2 while it is removed
            shutil.rmtree(tmp_path / "m" / "2")
            report = await watcher.reload()
            assert report.unloaded == [("m", "2")]
            assert repository.get("m").version == "1"  # new calls get version 1 at once
            await asyncio.sleep(0.2)
            rows = np.zeros((3, 64), np.float32)
            part = await old.scorer.submit(rows)  # the held version still answers
            assert part["score"].shape == (3,)
        await asyncio.sleep(0.2)  # released: now it closes
        with pytest.raises(NotReady):
            await old.scorer.submit(rows)

    _run(tmp_path, body)


def test_corrupted_file_under_a_served_version_keeps_the_loaded_copy(tmp_path: Path) -> None:
    build_version(tmp_path, "m", "1")

    async def body(watcher: RepositoryWatcher, repository: ModelRepository) -> None:
        before = repository.get("m", "1")
        (tmp_path / "m" / "1" / CALIBRATION_FILE).write_bytes(b"not a numpy file")
        report = await watcher.reload()
        assert [r.version for r in report.refused] == ["1"]
        assert "sha256" in report.refused[0].reason or "calibration" in report.refused[0].reason
        assert repository.get("m", "1") is before  # still serving the verified copy
        assert (await watcher.reload()).refused == []  # the same files are not retried

    _run(tmp_path, body)


def test_changed_version_is_replaced(tmp_path: Path) -> None:
    build_version(tmp_path, "m", "1", n_calibration=99)

    async def body(watcher: RepositoryWatcher, repository: ModelRepository) -> None:
        before = repository.get("m", "1")
        staged = tmp_path / ".staged"
        build_version(staged, "m", "1", n_calibration=49)
        shutil.rmtree(tmp_path / "m" / "1")
        shutil.move(staged / "m" / "1", tmp_path / "m" / "1")
        report = await watcher.reload()
        assert report.reloaded == [("m", "1")]
        after = repository.get("m", "1")
        assert after is not before
        assert after.manifest.require_scoring().calibration.size == 49

    _run(tmp_path, body)


def test_bad_new_version_is_refused_and_the_others_serve(tmp_path: Path) -> None:
    build_version(tmp_path, "m", "1")

    async def body(watcher: RepositoryWatcher, repository: ModelRepository) -> None:
        build_version(tmp_path, "m", "2")
        manifest = tmp_path / "m" / "2" / MANIFEST_FILE
        manifest.write_text(manifest.read_text().replace('"name"', '"nom"', 1))
        report = await watcher.reload()
        assert [(r.name, r.version) for r in report.refused] == [("m", "2")]
        assert repository.get("m").version == "1"
        json.loads(manifest.read_text())  # still JSON: the refusal came from validation

    _run(tmp_path, body)


def test_unload_holds_until_an_explicit_load(tmp_path: Path) -> None:
    build_version(tmp_path, "m", "1")
    build_version(tmp_path, "other", "1", seed=2)

    async def body(watcher: RepositoryWatcher, repository: ModelRepository) -> None:
        report = await watcher.unload("m")
        assert report.unloaded == [("m", "1")]
        assert (await watcher.reload()).changed is False  # polling does not bring it back
        with pytest.raises(ModelNotFound):
            repository.get("m")
        with pytest.raises(ModelNotFound):
            await watcher.unload("m")
        report = await watcher.load("m")
        assert report.loaded == [("m", "1")]
        assert _served(repository) == {"m": ["1"], "other": ["1"]}
        with pytest.raises(ModelNotFound):
            await watcher.load("missing")

    _run(tmp_path, body)


def test_fingerprint_sees_size_and_mtime_changes(tmp_path: Path) -> None:
    version_dir = build_version(tmp_path, "m", "1")
    first = fingerprint(version_dir)
    assert fingerprint(version_dir) == first
    (version_dir / "extra.txt").write_text("x")
    assert fingerprint(version_dir) != first
