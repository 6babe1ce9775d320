"""Export a generator family's run (gan, cgan, pix2pix) as a new, complete version.

Steps: build the family's graph (generator_graphs; for pix2pix the dropout mode is chosen on
held-out pairs) -> trace it to ONNX -> check ONNX Runtime against PyTorch on seeded inputs ->
write manifest.json last (capability generate or translate, the generation section, no
scoring or latent section) and rename the finished directory into place, through the same
staging and publishing as the scorer families (export/publish.py); then config.pbtxt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from latentwatch.export.errors import ExportError
from latentwatch.export.generator_graphs import GeneratorGraphDef, output_range, seeded_feeds
from latentwatch.export.generator_inputs import GeneratorInputs, check_generator_inputs
from latentwatch.export.generator_onnx import check_generator_parity, export_generator_onnx
from latentwatch.export.parity import ParityConfig
from latentwatch.export.publish import check_name, stage_and_publish, staged_sha256
from latentwatch.export.triton import write_triton_config
from latentwatch.families import family, resolve
from latentwatch.repository.layout import MANIFEST_FILE
from latentwatch.repository.manifest import (
    GenerationSpec,
    GraphSpec,
    InputSpec,
    Manifest,
    OnnxInfo,
    Parity,
    TensorSpec,
)

logger = logging.getLogger(__name__)


def export_generator(
    inputs: GeneratorInputs, repo: Path, name: str, *, parity: ParityConfig | None = None
) -> Path:
    """Export already-loaded generator inputs as the next version of `name` in `repo`."""
    parity = parity or ParityConfig()
    check_name(name)
    check_generator_inputs(inputs)
    started_s = time.perf_counter()
    logger.info("exporting %s (%s, samples of shape %s) to %s", name, inputs.model_kind,
                inputs.sample_shape, repo / name)
    graphs: list[GeneratorGraphDef] = resolve(family(inputs.model_kind).graph_builder)(inputs)
    model_dir = Path(repo) / name
    version_dir = stage_and_publish(
        model_dir, lambda staging: _build_version(inputs, graphs, staging, name, parity)
    )
    write_triton_config(model_dir, Manifest.read(version_dir))
    logger.info("exported %s version %s in %.1f s: %s", name, version_dir.name,
                time.perf_counter() - started_s, version_dir)
    return version_dir


def _build_version(
    inputs: GeneratorInputs,
    graphs: list[GeneratorGraphDef],
    staging: Path,
    name: str,
    parity: ParityConfig,
) -> Callable[[str], None]:
    """Write the graphs into `staging` and check their parity; return the manifest writer."""
    worst: dict[str, float] = {}
    onnx_info: OnnxInfo | None = None
    for graph in graphs:
        onnx_info = export_generator_onnx(graph, staging / graph.file)
        sketches = inputs.heldout_pairs[0] if inputs.heldout_pairs is not None else None
        feeds = seeded_feeds(graph, max(parity.batch_sizes), inputs.provenance.seed,
                             inputs.n_classes, sketches)
        errors = check_generator_parity(graph, staging / graph.file, feeds, parity)
        worst |= {f"{graph.name}.{output}": error for output, error in errors.items()}
    assert onnx_info is not None
    onnx_spec: OnnxInfo = onnx_info  # narrowed for the closure below

    def write_manifest(version: str) -> None:
        parity_spec = Parity(batch_sizes=list(parity.batch_sizes), rtol=parity.rtol,
                             atol=parity.atol, max_abs_error=worst)
        try:
            manifest = _manifest(inputs, graphs, staging, name, version, parity_spec, onnx_spec)
        except ValidationError as err:  # a contract violation, said in the export's own terms
            raise ExportError(f"the manifest for {name} would be invalid: {err}") from err
        (staging / MANIFEST_FILE).write_text(manifest.to_json())

    return write_manifest


def generation_spec(inputs: GeneratorInputs, graphs: list[GeneratorGraphDef]) -> GenerationSpec:
    dropout = next((g.dropout for g in graphs if g.dropout is not None), None)
    return GenerationSpec(
        latent_dim=inputs.latent_dim,
        n_classes=inputs.n_classes,
        class_names=inputs.class_names,
        output_shape=list(inputs.sample_shape),
        output_range=output_range(inputs.preprocessing),
        dropout_at_inference=dropout.at_inference if dropout is not None else None,
        stabilisation=inputs.stabilisation,
    )


def _graph_spec(graph: GeneratorGraphDef) -> GraphSpec:
    return GraphSpec(
        file=graph.file,
        inputs=[TensorSpec(name=t.name, datatype=t.datatype, shape=[-1, *t.shape])
                for t in graph.inputs],
        outputs=[TensorSpec(name=n, shape=[-1, *shape]) for n, shape in graph.outputs.items()],
    )


def _manifest(
    inputs: GeneratorInputs,
    graphs: list[GeneratorGraphDef],
    staging: Path,
    name: str,
    version: str,
    parity: Parity,
    onnx_info: OnnxInfo,
) -> Manifest:
    return Manifest(
        name=name,
        version=version,
        model_kind=inputs.model_kind,
        capabilities=list(family(inputs.model_kind).capabilities),
        # The data the model was trained on: what samples look like, and (translators) what
        # the graph takes.
        input=InputSpec(
            shape=[inputs.n_features],
            image_shape=inputs.image_shape,
            preprocessing=inputs.preprocessing,
            feature_names=inputs.feature_names,
        ),
        graphs={g.name: _graph_spec(g) for g in graphs},
        generation=generation_spec(inputs, graphs),
        parity=parity,
        onnx=onnx_info,
        provenance=inputs.provenance,
        sha256=staged_sha256(staging),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
