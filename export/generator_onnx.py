"""Tracing generator and translator graphs to ONNX, and their parity against PyTorch.

The scorer family's graphs take one (batch, F) input (export/onnx_file.py); these take named
inputs of any rank and an INT64 label, so they are traced here, with the same opset, IR cap,
checks and trace batch, and compared with the same tolerance (export/parity.py `compare`).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from numpy.typing import NDArray

from latentwatch.export.errors import ExportError
from latentwatch.export.generator_graphs import GeneratorGraphDef
from latentwatch.export.onnx_file import OPSET, TRACE_BATCH, finish_onnx
from latentwatch.export.parity import ParityConfig, compare
from latentwatch.export.sessions import cpu_session
from latentwatch.repository.manifest import OnnxInfo

logger = logging.getLogger(__name__)

_TORCH_DTYPES = {"FP32": torch.float32, "INT64": torch.int64}


def _example(graph: GeneratorGraphDef) -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros(TRACE_BATCH, *t.shape, dtype=_TORCH_DTYPES[t.datatype])
                 for t in graph.inputs)


def export_generator_onnx(graph: GeneratorGraphDef, path: Path) -> OnnxInfo:
    """Trace `graph` to `path` with a dynamic `batch` axis on every tensor; checked, IR-capped."""
    input_names = [t.name for t in graph.inputs]
    names = [*input_names, *graph.outputs]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # see onnx_file.export_onnx
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                graph.module, _example(graph), str(path), dynamo=False, opset_version=OPSET,
                input_names=input_names, output_names=list(graph.outputs),
                dynamic_axes={name: {0: "batch"} for name in names}, do_constant_folding=True,
            )
    except Exception as err:  # the tracer raises many types; all mean the same to the caller
        raise ExportError(f"{graph.name}: torch.onnx.export failed: {err}") from err
    return finish_onnx(graph.name, path, lambda model: _check_and_declare(graph, model))


def _check_and_declare(graph: GeneratorGraphDef, model: onnx.ModelProto) -> None:
    """The tensor names are the wire contract; the (batch, ...) shapes are stated in the file."""
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    expected = [t.name for t in graph.inputs]
    if inputs != expected or outputs != list(graph.outputs):
        raise ExportError(f"{graph.name}: graph tensors are {inputs} -> {outputs}, expected "
                          f"{expected} -> {list(graph.outputs)}")
    declared = {t.name: t.shape for t in graph.inputs} | graph.outputs
    for value in [*model.graph.input, *model.graph.output]:
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        shape.dim.add().dim_param = "batch"
        for size in declared[value.name]:
            shape.dim.add().dim_value = size


def run_generator_torch(graph: GeneratorGraphDef,
                        feeds: dict[str, NDArray]) -> dict[str, NDArray[np.float32]]:
    """The graph's outputs by name in PyTorch (the reference for parity)."""
    args = [torch.from_numpy(feeds[t.name]) for t in graph.inputs]
    with torch.no_grad():
        result = graph.module(*args)
    values = (result,) if isinstance(result, torch.Tensor) else result
    return {name: v.numpy() for name, v in zip(graph.outputs, values, strict=True)}


def check_generator_parity(graph: GeneratorGraphDef, onnx_path: Path, feeds: dict[str, NDArray],
                           config: ParityConfig) -> dict[str, float]:
    """Worst |ort - torch| per output over config.batch_sizes (batch b: the first b rows of
    every feed); ExportError when out of tolerance."""
    session = cpu_session(onnx_path)
    worst = {name: 0.0 for name in graph.outputs}
    for batch in config.batch_sizes:
        feed = {name: np.ascontiguousarray(v[:batch]) for name, v in feeds.items()}
        if any(len(v) < batch for v in feed.values()):
            raise ExportError(f"{graph.name}: parity batch {batch} needs {batch} rows")
        expected = run_generator_torch(graph, feed)
        actual = dict(zip(graph.outputs, session.run(list(graph.outputs), feed), strict=True))
        for name in graph.outputs:
            error = compare(expected[name], np.asarray(actual[name]), config,
                            where=(graph.name, name, batch))
            worst[name] = max(worst[name], error)
    logger.info("parity %s at batches %s: worst abs error %s", graph.name,
                list(config.batch_sizes),
                ", ".join(f"{name} {err:.2g}" for name, err in worst.items()))
    return worst
