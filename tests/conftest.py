"""Shared fixtures: a real model repository, trained and exported once per test session."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

# Servers the tests start (in process or `latentwatch serve` subprocesses) take any free REST
# port instead of the default 8000, so that several can run at once.
os.environ.setdefault("LATENTWATCH_HTTP_PORT", "0")

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _shared_data_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"development data not found: {path.resolve()}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Callable[..., Path]:
    """`shared_data("mnist", FILE)`: a development data file; skips the test when it is absent."""
    return _shared_data_file


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with real digits-vae and digits-ae, trained briefly through the CLI."""
    from latentwatch.cli.main import main

    root = tmp_path_factory.mktemp("latentwatch")
    repo = root / "repo"
    for kind, name in (("vae", "digits-vae"), ("ae", "digits-ae")):
        run_dir = root / f"run-{kind}"
        args = ["train", "--data", "digits", "--model", kind, "--out", str(run_dir)]
        assert main([*args, "--epochs", "8", "--seed", "0"]) == 0
        assert main(["export", str(run_dir), "--repo", str(repo), "--name", name]) == 0
    return repo


@contextmanager
def running_server(repo: Path, **overrides: object) -> Iterator[str]:
    """The real gRPC server on an ephemeral port, its event loop in a thread; yields HOST:PORT."""
    from server_harness import ServerThread

    from latentwatch.service.settings import Settings

    overrides.setdefault("http_port", 0)  # the REST port too, ephemeral
    settings = Settings(repo=repo, host="127.0.0.1", port=0, metrics_port=0, **overrides)
    server = ServerThread(settings)
    try:
        yield f"127.0.0.1:{server.running.port}"
    finally:
        server.close()


@pytest.fixture(scope="session")
def serve() -> Callable[..., AbstractContextManager[str]]:
    """`with serve(repo) as target:` runs the real server for the block (see running_server)."""
    return running_server
