"""The committed generated code is what `make protos` produces from protos/latentwatch.proto."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATED = [
    "latentwatch_pb2.py",
    "latentwatch_pb2.pyi",
    "latentwatch_pb2_grpc.py",
    "latentwatch_pb2_grpc.pyi",
]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) generates the code")
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "protos", copy / "protos", ignore=shutil.ignore_patterns("*_pb2*"))
    shutil.copy(ROOT / "Makefile", copy / "Makefile")
    venv = Path(sys.executable).parent.parent
    if not (venv / ".installed").exists():
        pytest.skip("the environment was not made by `make install`: make protos would rebuild it")
    (copy / venv.name).symlink_to(venv)
    env = {**os.environ, "VENV": venv.name}
    subprocess.run(["make", "-o", f"{venv.name}/.installed", "protos"], cwd=copy, env=env,
                   check=True, capture_output=True)
    for name in GENERATED:
        assert (copy / "protos" / name).read_text() == (ROOT / "protos" / name).read_text(), name
