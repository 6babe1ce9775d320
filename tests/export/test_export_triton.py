"""The Triton config.pbtxt written beside the versions."""

from __future__ import annotations

import re
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from latentwatch.repository.manifest import Manifest

if TYPE_CHECKING:
    from conftest import Exported


def _triton_model_config() -> ModuleType:
    """tritonclient's ModelConfig messages (a serving dependency: always installed)."""
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


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
