"""Writing one graph to an .onnx file that ONNX Runtime 1.31 (and Triton) can load."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import onnx
import torch

from latentwatch.export.errors import ExportError
from latentwatch.export.graphs import GraphDef
from latentwatch.repository.manifest import OnnxInfo

logger = logging.getLogger(__name__)

OPSET = 17
# onnxruntime 1.31 reads at most IR version 13; onnx 1.23 would write 14 for graphs it builds.
MAX_IR_VERSION = 13
# Traced at a batch size that parity never checks, so a batch size baked into the graph by
# mistake shows up as a parity failure instead of passing unnoticed.
TRACE_BATCH = 3


def export_onnx(graph: GraphDef, path: Path) -> OnnxInfo:
    """Trace `graph` to `path` with a dynamic `batch` axis; checked and IR-capped."""
    example = torch.zeros(TRACE_BATCH, graph.input_width, dtype=torch.float32)
    names = [graph.input_name, *graph.outputs]
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
            # onnxscript (not shipped); the warning says nothing actionable here.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                graph.module,
                (example,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=[graph.input_name],
                output_names=list(graph.outputs),
                dynamic_axes={name: {0: "batch"} for name in names},
                do_constant_folding=True,
            )
    except Exception as err:  # the tracer raises many types; all mean the same to the caller
        raise ExportError(f"{graph.name}: torch.onnx.export failed: {err}") from err

    def check(model: onnx.ModelProto) -> None:
        _check_names(graph, model)
        _declare_shapes(graph, model)

    return finish_onnx(graph.name, path, check)


def finish_onnx(
    name: str, path: Path, check: Callable[[onnx.ModelProto], object]
) -> OnnxInfo:
    """A traced graph at `path` made the project's: IR capped, documented, `check`ed (names and
    declared shapes), validated by onnx's checker, saved again; its opset and producer."""
    model = onnx.load(str(path))
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    model.doc_string = f"latentwatch {name} graph"
    check(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"{name}: the exported ONNX graph is invalid: {err}") from err
    onnx.save(model, str(path))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    logger.info(
        "exported %s: opset %d, IR %d, %d nodes, %.1f KiB",
        path.name, opset, model.ir_version, len(model.graph.node), path.stat().st_size / 1024,
    )
    return OnnxInfo(
        opset=opset,
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
    )


def _check_names(graph: GraphDef, model: onnx.ModelProto) -> None:
    """The wire contract: tensor names in the file are exactly the ones the manifest lists."""
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [graph.input_name] or outputs != list(graph.outputs):
        raise ExportError(
            f"{graph.name}: graph tensors are {inputs} -> {outputs}, "
            f"expected [{graph.input_name!r}] -> {list(graph.outputs)}"
        )


def _declare_shapes(graph: GraphDef, model: onnx.ModelProto) -> None:
    """Write the known (batch, ...) shapes into the graph's signature.

    The tracer loses static sizes behind ops such as Slice (latent_mu becomes
    (batch, "Slicelatent_mu_dim_1")); clients and Triton read the signature, so state them.
    """
    declared = {graph.input_name: [graph.input_width], **graph.outputs}
    for value in [*model.graph.input, *model.graph.output]:
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        shape.dim.add().dim_param = "batch"
        for size in declared[value.name]:
            shape.dim.add().dim_value = size
