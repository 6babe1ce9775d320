"""The Triton config.pbtxt written beside the versions, and the per-graph Triton repository."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from latentwatch.errors import LatentwatchError
from latentwatch.export.triton import TritonOptions, write_triton_repository
from latentwatch.repository.layout import find_versions
from latentwatch.repository.manifest import Manifest
from latentwatch.service.runtime import triton_model_name

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


def _parse(path: Path) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), _triton_model_config().ModelConfig())


def test_triton_repository_has_one_parsed_config_per_graph(
    exported: dict[str, Exported], tmp_path: Path
) -> None:
    repo = exported["vae"].version_dir.parents[1]
    written = write_triton_repository(repo, tmp_path / "triton")
    expected = {}
    for model, version, version_dir in find_versions(repo):
        for graph, spec in Manifest.read(version_dir).graphs.items():
            expected.setdefault(triton_model_name(model, graph), []).append((version, spec))
    assert sorted(m.name for m in written) == sorted(expected) and len(expected) >= 9
    for model in written:
        config = _parse(model.path / "config.pbtxt")
        versions = expected[model.name]
        spec = versions[-1][1]
        assert config.name == model.name and config.backend == "onnxruntime"
        assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 1024
        assert config.dynamic_batching.max_queue_delay_microseconds == 500
        assert [(g.count, g.kind) for g in config.instance_group] == [(1, 0)]  # KIND_AUTO
        assert config.version_policy.HasField("all")
        assert not config.optimization.execution_accelerators.gpu_execution_accelerator
        assert [i.name for i in config.input] == [t.name for t in spec.inputs]
        assert [o.name for o in config.output] == [t.name for t in spec.outputs]
        for version, graph_spec in versions:
            linked = model.path / version / config.default_model_filename
            source = repo / model.name.rsplit(".", 1)[0] / version / graph_spec.file
            assert linked.read_bytes() == source.read_bytes()


def test_triton_options_reach_the_config(exported: dict[str, Exported], tmp_path: Path) -> None:
    repo = exported["vae"].version_dir.parents[1]
    options = TritonOptions(
        max_batch_size=64, max_queue_delay_us=100, instance_count=2, instance_kind="KIND_GPU",
        tensorrt=True, version_policy="latest:2",
    )
    written = write_triton_repository(repo, tmp_path / "triton", options)
    config = _parse(written[0].path / "config.pbtxt")
    assert config.max_batch_size == 64
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, 1)]  # KIND_GPU
    assert config.version_policy.latest.num_versions == 2
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    written = write_triton_repository(repo, tmp_path / "specific", TritonOptions(
        version_policy="specific", instance_kind="KIND_CPU"))
    config = _parse(written[0].path / "config.pbtxt")
    assert list(config.version_policy.specific.versions) == [int(v) for v in written[0].versions]
    assert [g.kind for g in config.instance_group] == [2]  # KIND_CPU


@pytest.mark.parametrize(("options", "text"), [
    ({"tensorrt": True, "instance_kind": "KIND_CPU"}, "TensorRT accelerator runs on GPU"),
    ({"version_policy": "newest"}, "version policy 'newest' is not one of"),
    ({"version_policy": "latest:0"}, "version policy 'latest:0'"),
    ({"max_batch_size": 0}, "max_batch_size and instance_count must be >= 1"),
])
def test_bad_triton_options_are_refused(options: dict[str, Any], text: str) -> None:
    with pytest.raises(LatentwatchError, match=text):
        TritonOptions(**options)


def test_a_tampered_graph_is_not_linked_and_the_old_model_stays(
    exported: dict[str, Exported], tmp_path: Path
) -> None:
    source = exported["ae"].version_dir
    repo = tmp_path / "repo"
    shutil.copytree(source, repo / source.parent.name / source.name)
    out = tmp_path / "triton"
    write_triton_repository(repo, out)
    name = triton_model_name(source.parent.name, "scorer")
    before = (out / name / "config.pbtxt").read_text()
    scorer = repo / source.parent.name / source.name / "scorer.onnx"
    scorer.write_bytes(scorer.read_bytes() + b"\0")
    with pytest.raises(LatentwatchError, match="does not match its sha256"):
        write_triton_repository(repo, out)
    assert (out / name / "config.pbtxt").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == sorted(
        triton_model_name(source.parent.name, g) for g in Manifest.read(source).graphs
    )  # no staging directory left behind


def test_triton_repo_command(exported: dict[str, Exported], tmp_path: Path, capsys) -> None:
    from latentwatch.cli.main import main

    repo = exported["vae"].version_dir.parents[1]
    out = tmp_path / "triton"
    assert main(["triton-repo", "--repo", str(repo), "--out", str(out), "--kind", "cpu",
                 "--instances", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"Triton models to {out}" in printed and "digits-vae.scorer: versions" in printed
    config = _parse(out / "digits-vae.scorer" / "config.pbtxt")
    assert [(g.count, g.kind) for g in config.instance_group] == [(3, 2)]
    assert main(["triton-repo", "--repo", str(repo), "--out", str(out), "--tensorrt",
                 "--kind", "cpu"]) == 2  # refused with the reason, nothing written
