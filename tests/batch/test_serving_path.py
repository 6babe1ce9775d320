"""The serving path never imports the batch layer or Ray; the batch layer imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _modules_after(imports: str, names: list[str]) -> list[str]:
    code = (f"import json, sys, {imports}; "
            f"print(json.dumps([n for n in {names!r} if n in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_server_imports_neither_ray_nor_the_batch_layer() -> None:
    loaded = _modules_after("latentwatch.cli.serve, latentwatch.service.server",
                            ["ray", "latentwatch.batch"])
    assert loaded == []


def test_the_batch_layer_imports_neither_torch_nor_onnx() -> None:
    pytest.importorskip("ray", reason="ray is not installed (pip install '.[ray]')")
    loaded = _modules_after("latentwatch.batch.ray_scoring, latentwatch.batch.ray_bias",
                            ["torch", "onnx", "ray"])
    assert loaded == ["ray"]
