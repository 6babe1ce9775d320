"""config.pbtxt for NVIDIA Triton: the exported repository is also a Triton model repository.

Triton serves the version's main graph (`default_model_filename`) with its onnxruntime
backend: the scorer, or for generator families the generator or translator; the other files in
a version directory are ignored by Triton. The config describes the latest version,
and Triton is told to serve only that one (the service itself serves every version).
"""

from __future__ import annotations

import os
from pathlib import Path

from latentwatch.repository.layout import TRITON_CONFIG_FILE, hidden_temp
from latentwatch.repository.manifest import GraphSpec, Manifest, TensorSpec

MAX_BATCH_SIZE = 1024
MAX_QUEUE_DELAY_US = 500
# The graph Triton serves, the first of these a version has.
SERVED_GRAPHS = ("scorer", "generator", "translator")


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


def served_graph(manifest: Manifest) -> GraphSpec:
    """The graph of the version that Triton serves."""
    name = next(g for g in SERVED_GRAPHS if g in manifest.graphs)
    return manifest.graphs[name]


def triton_config(manifest: Manifest) -> str:
    graph = served_graph(manifest)
    inputs = ",\n".join(_tensor(t) for t in graph.inputs)
    outputs = ",\n".join(_tensor(t) for t in graph.outputs)
    return (
        f'name: "{manifest.name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f'default_model_filename: "{graph.file}"\n'
        f"max_batch_size: {MAX_BATCH_SIZE}\n"
        f"input [\n{inputs}\n]\n"
        f"output [\n{outputs}\n]\n"
        f"dynamic_batching {{ max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US} }}\n"
        "version_policy: { latest: { num_versions: 1 } }\n"
    )


def write_triton_config(model_dir: Path, manifest: Manifest) -> Path:
    """Write <repo>/<model>/config.pbtxt for `manifest` (the newest version), atomically."""
    path = model_dir / TRITON_CONFIG_FILE
    tmp = path.with_name(hidden_temp(TRITON_CONFIG_FILE))
    tmp.write_text(triton_config(manifest))
    os.replace(tmp, path)
    return path
