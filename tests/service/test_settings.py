"""Settings: environment, CLI flags on top, and start-up failures that name the problem."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest
from repo_builder import build_version
from server_harness import ServerThread, server_settings

from latentwatch.cli.serve import settings_from_args
from latentwatch.errors import LatentwatchError
from latentwatch.service.runtime import usable_cpu_count
from latentwatch.service.server import start_server
from latentwatch.service.settings import Settings


def test_environment_is_read_and_given_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTWATCH_PORT", "6000")
    monkeypatch.setenv("LATENTWATCH_METRICS_PORT", "6001")
    monkeypatch.setenv("LATENTWATCH_MAX_BATCH_DELAY_MS", "0.5")
    args = argparse.Namespace(repo=Path("elsewhere"), host=None, port=7000, metrics_port=None)
    settings = settings_from_args(args)
    assert settings.port == 7000  # flag
    assert settings.metrics_port == 6001  # environment
    assert settings.repo == Path("elsewhere")
    assert settings.host == Settings.model_fields["host"].default
    assert settings.max_batch_delay_ms == 0.5


def test_every_setting_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_usable_cpus_respect_the_affinity_mask() -> None:
    import os

    assert 1 <= usable_cpu_count() <= len(os.sched_getaffinity(0))


def test_a_taken_grpc_port_fails_the_start_with_its_address(tmp_path: Path) -> None:
    build_version(tmp_path, "m", "1", n_features=4)
    first = ServerThread(server_settings(tmp_path))
    try:
        taken = server_settings(tmp_path, port=first.running.port)
        with pytest.raises(LatentwatchError, match=f"cannot serve gRPC on 127.0.0.1:{taken.port}"):
            asyncio.run(start_server(taken))
        taken = server_settings(tmp_path, metrics_port=first.running.metrics_port)
        with pytest.raises(LatentwatchError, match="cannot serve metrics on 127.0.0.1"):
            asyncio.run(start_server(taken))
    finally:
        first.close()
