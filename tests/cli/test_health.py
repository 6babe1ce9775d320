"""`latentwatch health` against real servers: 0 when SERVING, 1 when not serving or not there."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from server_harness import ServerThread, server_settings

from latentwatch.cli.main import main

Serve = Callable[..., AbstractContextManager[str]]


def test_a_serving_server_is_healthy(
    model_repo: Path, serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve(model_repo) as target:
        assert main(["health", "--server", target]) == 0
    assert capsys.readouterr().out.strip() == f"{target}: SERVING"


def test_without_a_server_it_defaults_to_latentwatch_port(
    model_repo: Path, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(model_repo) as target:
        monkeypatch.setenv("LATENTWATCH_PORT", target.rsplit(":", 1)[1])
        assert main(["health"]) == 0


def test_a_server_that_does_not_serve_is_not_healthy(
    model_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # require_gpu on a machine without CUDA: loaded, but NOT_SERVING.
    server = ServerThread(server_settings(model_repo, require_gpu=True))
    try:
        if server.running.core.ready:
            pytest.skip("the versions run on a GPU here: require_gpu is met")
        target = f"127.0.0.1:{server.running.port}"
        assert main(["health", "--server", target, "--timeout", "1"]) == 1
    finally:
        server.close()
    assert "NOT_SERVING" in capsys.readouterr().err


def test_nothing_listening_is_not_healthy_within_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the check: nothing listens there
    start = time.monotonic()
    assert main(["health", "--server", f"127.0.0.1:{port}", "--timeout", "1"]) == 1
    assert time.monotonic() - start < 5
    assert "not SERVING" in capsys.readouterr().err
