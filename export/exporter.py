"""Export a training run into a model repository as a new, complete version.

Steps: load the checkpoint (run_inputs) -> build the family's graphs (graphs) -> trace each to
ONNX -> check ONNX Runtime against PyTorch -> fit the second stage (second_stage_fit) and the
latent reference (reference) -> score the held-out calibration rows with the exported scorer ->
write manifest.json last and rename the finished directory into place (publish). Finally
<repo>/<name>/config.pbtxt is (re)written so that Triton can serve the same repository.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import ValidationError

from latentwatch.export.calibration import calibration_scores, warn_if_small
from latentwatch.export.errors import ExportError
from latentwatch.export.explain_fit import fit_explain
from latentwatch.export.generator_export import export_generator
from latentwatch.export.generator_inputs import exports_generator
from latentwatch.export.generator_run import load_generator_run
from latentwatch.export.graphs import GraphDef, run_torch
from latentwatch.export.onnx_file import export_onnx
from latentwatch.export.parity import ParityConfig, check_parity, parity_rows
from latentwatch.export.publish import check_name, stage_and_publish, staged_sha256
from latentwatch.export.reference import write_reference
from latentwatch.export.run_inputs import ExportInputs, check_inputs, load_run, run_model_kind
from latentwatch.export.second_stage_fit import default_kind, fit_export_second_stage
from latentwatch.export.selection import select_second_stage, selection_reason
from latentwatch.export.sessions import cpu_session
from latentwatch.export.triton import write_triton_config
from latentwatch.families import family, resolve
from latentwatch.repository.layout import CALIBRATION_FILE, MANIFEST_FILE, SCORER_FILE
from latentwatch.repository.manifest import (
    Calibration,
    GraphSpec,
    InputSpec,
    LatentSpec,
    Manifest,
    OnnxInfo,
    Parity,
    ReferenceSpec,
    ScoringSpec,
    SecondStageSpec,
    TensorSpec,
)
from latentwatch.repository.manifest_selection import SelectionSpec
from latentwatch.scoring.second_stage import KIND as SECOND_STAGE_KIND

logger = logging.getLogger(__name__)

__all__ = ["SELECT_STATISTICS", "ExportInputs", "export_inputs", "export_run", "load_run"]

# Whether export chooses the second stage's statistics per model without labels (README, Score
# kinds: measured with benchmarks/selection_eval.py).
SELECT_STATISTICS = True


def export_run(
    run_dir: Path, repo: Path, name: str, *, default_alpha: float = 0.05,
    select_statistics: bool = SELECT_STATISTICS,
    n_importance_samples: int | None = None,
    n_reference_rows: int | None = None,
) -> Path:
    """Export `run_dir` (from `latentwatch train`) as the next version of `name` in `repo`.

    Returns the new version directory `<repo>/<name>/<version>/`. Runs of generator families
    take export/generator_export.py (`default_alpha` does not apply: they calibrate nothing).
    With `select_statistics`, the second stage's statistics are chosen per model without labels
    (export/selection.py). `n_importance_samples` (K, the fixed draws the scorer decodes) and
    `n_reference_rows` (the kNN reference's size) replace the run's own when given: both are
    scoring choices, so one trained model can be exported with several.
    """
    run_dir = Path(run_dir)
    if exports_generator(run_model_kind(run_dir)):  # gan, cgan, pix2pix: no scorer
        return export_generator(load_generator_run(run_dir), Path(repo), name)
    inputs = load_run(run_dir)
    if n_importance_samples is not None:
        if not inputs.n_importance_samples:
            raise ExportError(f"{inputs.model_kind!r} draws no latent samples: "
                              "n_importance_samples does not apply")
        inputs = dataclasses.replace(inputs, n_importance_samples=n_importance_samples)
    if n_reference_rows is not None:
        inputs = dataclasses.replace(inputs, n_reference_rows=n_reference_rows)
    return export_inputs(inputs, Path(repo), name, default_alpha=default_alpha,
                         select_statistics=select_statistics)


def export_inputs(
    inputs: ExportInputs,
    repo: Path,
    name: str,
    *,
    default_alpha: float = 0.05,
    parity: ParityConfig | None = None,
    select_statistics: bool = SELECT_STATISTICS,
) -> Path:
    """Export already-loaded inputs; see export_run."""
    parity = parity or ParityConfig()
    check_name(name)
    if not 0.0 < default_alpha < 1.0:
        raise ExportError(f"default_alpha must be in (0, 1), got {default_alpha}")
    check_inputs(inputs)
    started_s = time.perf_counter()
    logger.info(
        "exporting %s (%s, %d features, latent %d) to %s",
        name, inputs.model_kind, inputs.n_features, inputs.latent_dim, repo / name,
    )
    build_graphs = resolve(family(inputs.model_kind).graph_builder)
    graphs: list[GraphDef] = build_graphs(
        inputs.model,
        model_kind=inputs.model_kind,
        n_features=inputs.n_features,
        latent_dim=inputs.latent_dim,
        n_importance_samples=inputs.n_importance_samples,
        preprocessing=inputs.preprocessing,
        seed=inputs.provenance.seed,
    )
    model_dir = repo / name
    version_dir = stage_and_publish(
        model_dir,
        lambda staging: _build_version(inputs, graphs, staging, name, default_alpha, parity,
                                       select_statistics),
    )
    write_triton_config(model_dir, Manifest.read(version_dir))
    logger.info(
        "exported %s version %s in %.1f s: %s",
        name, version_dir.name, time.perf_counter() - started_s, version_dir,
    )
    return version_dir


def _build_version(
    inputs: ExportInputs,
    graphs: list[GraphDef],
    staging: Path,
    name: str,
    default_alpha: float,
    parity: ParityConfig,
    select_statistics: bool,
) -> Callable[[str], None]:
    """Write every file but the manifest into `staging`; return the manifest writer."""
    onnx_info: OnnxInfo | None = None
    for step, graph in enumerate(graphs, start=1):
        logger.info("step %d/%d: exporting %s", step, len(graphs) + 2, graph.file)
        onnx_info = export_onnx(graph, staging / graph.file)
    assert onnx_info is not None
    onnx_spec: OnnxInfo = onnx_info  # narrowed for the closure below

    logger.info("step %d/%d: checking parity (ONNX Runtime vs PyTorch)", len(graphs) + 1,
                len(graphs) + 2)
    max_abs_error = _check_all_parity(graphs, staging, inputs.calibration_rows, parity)

    graph_kinds = list(family(inputs.model_kind).score_kinds)
    stage, stage_spec = None, None
    if inputs.train_rows is not None:
        logger.info("step %d/%d: fitting the second stage (%s)", len(graphs) + 2, len(graphs) + 3,
                    SECOND_STAGE_KIND)
        stage, stage_spec = fit_export_second_stage(inputs, staging)
    selection = None
    if stage is not None and stage_spec is not None and select_statistics:
        stage, stage_spec, selection = select_second_stage(inputs, staging, stage, stage_spec)
    kinds = [*graph_kinds, SECOND_STAGE_KIND] if stage is not None else graph_kinds
    reference_spec = write_reference(inputs, staging) if inputs.train_rows is not None else None

    logger.info("step %d/%d: calibrating on %d held-out rows", len(graphs) + 3, len(graphs) + 3,
                len(inputs.calibration_rows))
    scores = calibration_scores(
        cpu_session(staging / SCORER_FILE), inputs.calibration_rows, kinds, stage,
        inputs.preprocessing,
    )
    if not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores)).any(axis=1).sum())
        raise ExportError(f"calibration: {bad} held-out rows got non-finite scores")
    np.save(staging / CALIBRATION_FILE, scores, allow_pickle=False)
    warn_if_small(len(scores), default_alpha)
    fit_explain(inputs, staging)  # explain.npz, listed with every other file's sha256

    def write_manifest(version: str) -> None:
        try:
            scoring = _scoring(inputs, kinds, stage_spec, len(scores), default_alpha, selection)
            parity_spec = Parity(batch_sizes=list(parity.batch_sizes), rtol=parity.rtol,
                                 atol=parity.atol, max_abs_error=max_abs_error)
            manifest = _manifest(inputs, graphs, staging, name, version, scoring,
                                 reference_spec, parity_spec, onnx_spec)
        except ValidationError as err:  # a contract violation, said in the export's own terms
            raise ExportError(f"the manifest for {name} would be invalid: {err}") from err
        (staging / MANIFEST_FILE).write_text(manifest.to_json())

    return write_manifest


def _scoring(
    inputs: ExportInputs,
    kinds: list[str],
    stage_spec: SecondStageSpec | None,
    n_calibration: int,
    default_alpha: float,
    selection: SelectionSpec | None,
) -> ScoringSpec:
    kind, reason = default_kind(kinds)
    return ScoringSpec(
        score_kinds=kinds,
        default_score_kind=kind,
        default_score_reason=(selection_reason(selection, reason) if selection is not None
                              else reason),
        second_stage=stage_spec,
        selection=selection,
        calibration=Calibration(
            file=CALIBRATION_FILE,
            size=n_calibration,
            score_kinds=kinds,
            default_alpha=default_alpha,
            split=inputs.calibration_split,
        ),
    )


def _manifest(
    inputs: ExportInputs,
    graphs: list[GraphDef],
    staging: Path,
    name: str,
    version: str,
    scoring: ScoringSpec,
    reference: ReferenceSpec | None,
    parity: Parity,
    onnx_info: OnnxInfo,
) -> Manifest:
    """The version's manifest, sha256 of every file already in `staging`."""
    return Manifest(
        name=name,
        version=version,
        model_kind=inputs.model_kind,
        capabilities=list(family(inputs.model_kind).capabilities),
        input=InputSpec(
            shape=[inputs.n_features],
            image_shape=inputs.image_shape,
            preprocessing=inputs.preprocessing,
            feature_names=inputs.feature_names,
        ),
        graphs={g.name: _graph_spec(g) for g in graphs},
        latent=LatentSpec(
            latent_dim=inputs.latent_dim,
            beta=inputs.beta,
            decoder=inputs.decoder,  # type: ignore[arg-type]  # validated by pydantic
            n_importance_samples=inputs.n_importance_samples,
        ),
        scoring=scoring,
        reference=reference,
        parity=parity,
        onnx=onnx_info,
        provenance=inputs.provenance,
        sha256=staged_sha256(staging),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _check_all_parity(
    graphs: list[GraphDef], staging: Path, rows: NDArray[np.float32], config: ParityConfig
) -> dict[str, float]:
    """Worst abs error per "graph.output"; the decoder is fed the encoder's means of the rows."""
    raw = parity_rows(rows, max(config.batch_sizes))
    by_name = {g.name: g for g in graphs}
    latents = run_torch(by_name["encoder"], torch.from_numpy(raw))["latent_mu"].numpy()
    worst: dict[str, float] = {}
    for graph in graphs:
        feed = latents if graph.name == "decoder" else raw
        errors = check_parity(graph, staging / graph.file, feed, config)
        worst |= {f"{graph.name}.{output}": error for output, error in errors.items()}
    return worst


def _graph_spec(graph: GraphDef) -> GraphSpec:
    return GraphSpec(
        file=graph.file,
        inputs=[TensorSpec(name=graph.input_name, shape=[-1, graph.input_width])],
        outputs=[TensorSpec(name=n, shape=[-1, *shape]) for n, shape in graph.outputs.items()],
    )
