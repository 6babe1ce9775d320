"""config.pbtxt for NVIDIA Triton: the exported repository is also a Triton model repository.

Triton serves the scorer (`default_model_filename`) with its onnxruntime backend; the other
files in a version directory are ignored by Triton. The config describes the latest version,
and Triton is told to serve only that one (the service itself serves every version).
"""

from __future__ import annotations

import os
from pathlib import Path

from latentwatch.repository.layout import TRITON_CONFIG_FILE, hidden_temp
from latentwatch.repository.manifest import Manifest

MAX_BATCH_SIZE = 1024
MAX_QUEUE_DELAY_US = 500


def _tensor(name: str, dims: list[int]) -> str:
    # Per-row scalars are (batch,) in the graph; Triton wants at least one dim beside the
    # batch, so they are declared [1] and reshaped to [] for the model.
    if not dims:
        return f'  {{ name: "{name}" data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }} }}'
    shape = f"dims: [ {', '.join(map(str, dims))} ]"
    return f'  {{ name: "{name}" data_type: TYPE_FP32 {shape} }}'


def triton_config(manifest: Manifest) -> str:
    scorer = manifest.graphs["scorer"]
    inputs = ",\n".join(_tensor(t.name, t.shape[1:]) for t in scorer.inputs)
    outputs = ",\n".join(_tensor(t.name, t.shape[1:]) for t in scorer.outputs)
    return (
        f'name: "{manifest.name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f'default_model_filename: "{scorer.file}"\n'
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
