"""config.pbtxt for NVIDIA Triton: the exported repository as Triton model repositories.

Two shapes, one config writer (`graph_config`):

- `<repo>/<model>/config.pbtxt`, written at export: Triton pointed at the latentwatch repository
  itself serves each model's main graph (the scorer, or the generator or translator) under the
  model's name, latest version only (`default_model_filename`; Triton ignores the other files).
- `write_triton_repository(repo, out)` (`latentwatch triton-repo`): a Triton repository beside
  it with one Triton model per graph, `<out>/<model>.<graph>/config.pbtxt` and
  `<out>/<model>.<graph>/<version>/<graph>.onnx` (hard links, copies across file systems), for
  every version; what the service's Triton backend (service/triton_runtime.py) asks for. It
  cannot live inside the latentwatch repository: the walker would take `<model>.<graph>/` for a
  model of its own.

Needs neither torch nor onnx (the triton-repo command runs in a serving install).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from latentwatch.errors import LatentwatchError
from latentwatch.repository.layout import TRITON_CONFIG_FILE, find_versions, hidden_temp
from latentwatch.repository.manifest import GraphSpec, Manifest, TensorSpec, sha256_file
from latentwatch.service.runtime import triton_model_name

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 1024
MAX_QUEUE_DELAY_US = 500
# The graph the per-model config serves, the first of these a version has.
SERVED_GRAPHS = ("scorer", "generator", "translator")
InstanceKind = Literal["KIND_AUTO", "KIND_CPU", "KIND_GPU"]


@dataclass(frozen=True)
class TritonOptions:
    """What a generated config asks of Triton (the same for every graph)."""

    max_batch_size: int = MAX_BATCH_SIZE
    max_queue_delay_us: int = MAX_QUEUE_DELAY_US  # dynamic batching: longest wait for a batch
    instance_count: int = 1  # model instances per device (per GPU, or on the CPU)
    instance_kind: InstanceKind = "KIND_AUTO"  # AUTO: GPUs when Triton has them, else the CPU
    tensorrt: bool = False  # ONNX Runtime's TensorRT execution accelerator (GPU instances)
    tensorrt_precision: Literal["FP32", "FP16"] = "FP16"
    # "all", "latest:N" or "specific" (exactly the versions written).
    version_policy: str = "all"

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue_delay_us < 0 or self.instance_count < 1:
            raise LatentwatchError(
                "max_batch_size and instance_count must be >= 1, max_queue_delay_us >= 0"
            )
        if self.tensorrt and self.instance_kind == "KIND_CPU":
            raise LatentwatchError("the TensorRT accelerator runs on GPU instances, not KIND_CPU")
        policy = self.version_policy
        latest = policy.removeprefix("latest:")
        if policy not in ("all", "specific") and not (latest != policy and latest.isdigit()
                                                      and int(latest) >= 1):
            raise LatentwatchError(
                f"version policy {policy!r} is not one of all, specific, latest:N (N >= 1)"
            )


def _tensor(tensor: TensorSpec) -> str:
    # Per-row scalars (scores, labels) are (batch,) in the graph; Triton wants at least one dim
    # beside the batch, so they are declared [1] and reshaped to [] for the model.
    name, dims = tensor.name, tensor.shape[1:]
    # Triton's type names are the v2 datatypes prefixed with TYPE_, but for BYTES.
    dtype = "TYPE_STRING" if tensor.datatype == "BYTES" else f"TYPE_{tensor.datatype}"
    if not dims:
        return f'  {{ name: "{name}" data_type: {dtype} dims: [ 1 ] reshape: {{ shape: [ ] }} }}'
    shape = f"dims: [ {', '.join(map(str, dims))} ]"
    return f'  {{ name: "{name}" data_type: {dtype} {shape} }}'


def _version_policy(policy: str, versions: list[str]) -> str:
    if policy == "all":
        return "version_policy: { all: { } }\n"
    if policy == "specific":
        return f"version_policy: {{ specific: {{ versions: [ {', '.join(versions)} ] }} }}\n"
    return f"version_policy: {{ latest: {{ num_versions: {policy.removeprefix('latest:')} }} }}\n"


def graph_config(
    name: str, graph: GraphSpec, options: TritonOptions, versions: list[str] | None = None
) -> str:
    """The config.pbtxt of Triton model `name` serving `graph` with the onnxruntime backend."""
    inputs = ",\n".join(_tensor(t) for t in graph.inputs)
    outputs = ",\n".join(_tensor(t) for t in graph.outputs)
    text = (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        'backend: "onnxruntime"\n'
        f'default_model_filename: "{graph.file}"\n'
        f"max_batch_size: {options.max_batch_size}\n"
        f"input [\n{inputs}\n]\n"
        f"output [\n{outputs}\n]\n"
        f"dynamic_batching {{ max_queue_delay_microseconds: {options.max_queue_delay_us} }}\n"
        f"instance_group [ {{ count: {options.instance_count} kind: {options.instance_kind} }} ]\n"
        + _version_policy(options.version_policy, versions or [])
    )
    if options.tensorrt:
        text += (
            "optimization { execution_accelerators { gpu_execution_accelerator: [ "
            '{ name: "tensorrt" parameters: { key: "precision_mode" '
            f'value: "{options.tensorrt_precision}" }} }} ] }} }}\n'
        )
    return text


def served_graph(manifest: Manifest) -> GraphSpec:
    """The graph of the version that the per-model config serves."""
    name = next(g for g in SERVED_GRAPHS if g in manifest.graphs)
    return manifest.graphs[name]


def triton_config(manifest: Manifest) -> str:
    """The per-model config: the main graph under the model's name, the latest version only."""
    return graph_config(manifest.name, served_graph(manifest), TritonOptions(
        version_policy="latest:1"
    ))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(hidden_temp(path.name))
    tmp.write_text(text)
    os.replace(tmp, path)


def write_triton_config(model_dir: Path, manifest: Manifest) -> Path:
    """Write <repo>/<model>/config.pbtxt for `manifest` (the newest version), atomically."""
    path = model_dir / TRITON_CONFIG_FILE
    _write_atomic(path, triton_config(manifest))
    return path


@dataclass(frozen=True)
class TritonModel:
    """One Triton model written: its name, directory and the versions it holds."""

    name: str
    path: Path
    versions: tuple[str, ...]
    skipped: tuple[str, ...]  # versions whose tensors differ from the newest one's


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copy2(source, target)


def write_triton_repository(
    repo: Path, out: Path, options: TritonOptions | None = None
) -> list[TritonModel]:
    """One Triton model per graph of every model in `repo`, written under `out` (see the module
    docstring). Each graph file's sha256 is checked against its manifest before it is linked; a
    model directory is built beside its old copy and swapped in, so Triton never sees half of one.
    The newest version's tensors make the config; older versions whose tensors differ are left
    out (and listed)."""
    options = options or TritonOptions()
    by_graph: dict[str, list[tuple[str, Manifest, Path]]] = {}
    for model, version, version_dir in find_versions(repo):
        manifest = Manifest.read(version_dir)
        for graph in manifest.graphs:
            entry = (version, manifest, version_dir)
            by_graph.setdefault(triton_model_name(model, graph), []).append(entry)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, entries in sorted(by_graph.items()):
        graph = name.rsplit(".", 1)[1]
        newest = entries[-1][1].graphs[graph]
        same = [e for e in entries if _same_tensors(e[1].graphs[graph], newest)]
        skipped = tuple(e[0] for e in entries if e not in same)
        for version in skipped:
            log.warning("%s version %s: its tensors differ from the newest version's; left out",
                        name, version)
        staging = out / hidden_temp(name)
        staging.mkdir()
        try:
            for version, manifest, version_dir in same:
                file = manifest.graphs[graph].file
                source = version_dir / file
                if sha256_file(source) != manifest.sha256.get(file):
                    raise LatentwatchError(f"{source} does not match its sha256 in the manifest")
                (staging / version).mkdir()
                _link(source, staging / version / file)
            versions = [e[0] for e in same]
            (staging / TRITON_CONFIG_FILE).write_text(
                graph_config(name, newest, options, versions)
            )
            target = out / name
            if target.exists():
                old = out / hidden_temp(f"{name}.old")
                os.replace(target, old)
                os.replace(staging, target)
                shutil.rmtree(old)
            else:
                os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        written.append(TritonModel(name, out / name, tuple(versions), skipped))
        log.info("wrote Triton model %s (versions %s)", name, ", ".join(versions))
    return written


def _same_tensors(a: GraphSpec, b: GraphSpec) -> bool:
    return a.inputs == b.inputs and a.outputs == b.outputs and a.file == b.file
