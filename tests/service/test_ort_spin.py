"""ONNX Runtime's idle pool threads sleep between runs unless ort_spin_wait asks them to spin:
the setting reaches every session the server makes, and the outputs do not depend on it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from latentwatch.repository.layout import SCORER_FILE
from latentwatch.service.ort_runtime import OrtRuntime
from latentwatch.service.runtime import make_runtime
from latentwatch.service.settings import Settings

SPIN_KEY = "session.intra_op.allow_spinning"


def _entry(runtime: OrtRuntime) -> str:
    assert runtime._session is not None
    return runtime._session.get_session_options().get_session_config_entry(SPIN_KEY)


@pytest.mark.parametrize(("spin_wait", "entry"), [(False, "0"), (True, "1")])
def test_the_setting_reaches_the_session(
    synthetic_repo: Path, spin_wait: bool, entry: str
) -> None:
    settings = Settings(repo=synthetic_repo, intra_op_threads=2, ort_spin_wait=spin_wait)
    path = synthetic_repo / "img-vae" / "1" / SCORER_FILE
    runtime = asyncio.run(make_runtime(path, settings))
    assert isinstance(runtime, OrtRuntime)
    assert _entry(runtime) == entry


def test_sleeping_threads_by_default_and_the_same_outputs(synthetic_repo: Path) -> None:
    path = synthetic_repo / "img-vae" / "1" / SCORER_FILE
    sleeping = OrtRuntime.open(path, intra_op_threads=2)
    spinning = OrtRuntime(path, 2, spin_wait=True)
    spinning.load_blocking()
    assert (_entry(sleeping), _entry(spinning)) == ("0", "1")
    rows = np.random.default_rng(0).normal(size=(16, 64)).astype(np.float32)
    feeds = {sleeping.input_names[0]: rows}
    a, b = sleeping.run(feeds), spinning.run(feeds)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
