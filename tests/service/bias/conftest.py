"""Fixtures of the BiasReport tests: the exported digits models and a synthetic repository
(wide latents with a decoder and a training reference; a plain model without either)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bias_support import BIAS_MAX_ROWS, PLAIN, QUEUE_ROWS, WIDE, WIDE_FEATURES, WIDE_LATENT
from numpy.typing import NDArray
from repo_builder import build_version
from server_harness import ServerThread, server_settings


@pytest.fixture(scope="module")
def digits() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    from latentwatch.data import load_source

    data = load_source("digits")
    assert data.y is not None
    return data.X, data.y  # (1797, 64) values 0..16, (1797,) digit


@pytest.fixture(scope="module")
def digits_server(model_repo: Path) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(model_repo))
    yield running
    running.close()


@pytest.fixture(scope="module")
def wide_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("bias_repo")
    build_version(repo, WIDE, kind="vae", n_features=WIDE_FEATURES, latent_dim=WIDE_LATENT,
                  with_decoder=True, with_reference=True)
    build_version(repo, PLAIN, kind="vae", n_features=WIDE_FEATURES, latent_dim=3)
    return repo


@pytest.fixture(scope="module")
def wide_server(wide_repo: Path) -> Iterator[ServerThread]:
    running = ServerThread(
        server_settings(wide_repo, bias_max_rows=BIAS_MAX_ROWS, max_queue_rows=QUEUE_ROWS)
    )
    yield running
    running.close()


@pytest.fixture(scope="module")
def target(digits_server: ServerThread) -> str:
    return f"127.0.0.1:{digits_server.running.port}"
