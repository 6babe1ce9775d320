"""The Triton config.pbtxt written beside the versions."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from latentwatch.repository.manifest import Manifest

if TYPE_CHECKING:
    from conftest import Exported


def _triton_model_config() -> ModuleType:
    """tritonclient's ModelConfig messages, loaded without tritonclient.grpc's __init__ (which
    insists on a newer grpcio than this project pins)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tritonclient is not installed: cannot check config.pbtxt against its schema")
    path = f"{next(iter(spec.submodule_search_locations))}/grpc/model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_config_names_the_scorer_and_its_tensors(exported: dict[str, Exported], kind: str) -> None:
    version_dir = exported[kind].version_dir
    manifest = Manifest.read(version_dir)
    text = (version_dir.parent / "config.pbtxt").read_text()
    assert f'name: "{version_dir.parent.name}"' in text
    assert 'default_model_filename: "scorer.onnx"' in text
    declared = re.findall(r'\{ name: "(\w+)" data_type: TYPE_FP32 dims: \[ (\d+) \]', text)
    scorer = manifest.graphs["scorer"]
    expected = [(t.name, str(t.shape[1] if len(t.shape) > 1 else 1))
                for t in [*scorer.inputs, *scorer.outputs]]
    assert declared == expected


def test_config_parses_as_a_triton_model_config(exported: dict[str, Exported]) -> None:
    from google.protobuf import text_format

    model_config = _triton_model_config()
    version_dir = exported["vae"].version_dir
    config = text_format.Parse(
        (version_dir.parent / "config.pbtxt").read_text(), model_config.ModelConfig()
    )
    manifest = Manifest.read(version_dir)
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size > 0
    assert [o.name for o in config.output] == [t.name for t in manifest.graphs["scorer"].outputs]
    assert list(config.output[0].dims) == [1] and list(config.output[0].reshape.shape) == []
