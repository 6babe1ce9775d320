"""Shared fixtures: a real model repository, trained and exported once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A file of the development data beside the repository; skips the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"development data not found: {path.resolve()}")
    return path


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with real digits-vae and digits-ae, trained briefly through the CLI."""
    from latentwatch.cli import main

    root = tmp_path_factory.mktemp("latentwatch")
    repo = root / "repo"
    for kind, name in (("vae", "digits-vae"), ("ae", "digits-ae")):
        run_dir = root / f"run-{kind}"
        args = ["train", "--data", "digits", "--model", kind, "--out", str(run_dir)]
        assert main([*args, "--epochs", "8", "--seed", "0"]) == 0
        assert main(["export", str(run_dir), "--repo", str(repo), "--name", name]) == 0
    return repo
