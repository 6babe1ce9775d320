"""Export a training run into a model repository as a new, complete version.

Steps: load the checkpoint -> build fused scorer, encoder and decoder -> trace each to ONNX ->
check ONNX Runtime against PyTorch -> score the held-out calibration rows with the exported
scorer -> write manifest.json last -> rename the finished directory into place. Everything is
written to a hidden staging directory beside the versions, so the service never sees half a
version, and a failed export leaves nothing behind. Finally <repo>/<name>/config.pbtxt is
(re)written so that Triton can serve the same repository.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import ValidationError
from torch import nn

from latentwatch.bias.drift import REFERENCE_FILE, LatentReference
from latentwatch.export.calibration import calibration_scores, scorer_outputs, warn_if_small
from latentwatch.export.errors import ExportError
from latentwatch.export.graphs import GraphDef, build_graphs, run_torch, score_kinds
from latentwatch.export.onnx_file import export_onnx
from latentwatch.export.parity import ParityConfig, check_parity, parity_rows
from latentwatch.export.sessions import cpu_session
from latentwatch.export.triton import write_triton_config
from latentwatch.repository.manifest import (
    MANIFEST_FILE,
    Calibration,
    GraphSpec,
    InputSpec,
    Manifest,
    OnnxInfo,
    Parity,
    Preprocessing,
    Provenance,
    ReferenceSpec,
    SecondStageSpec,
    TensorSpec,
    next_version,
    sha256_file,
)
from latentwatch.scoring.second_stage import FILE as SECOND_STAGE_FILE
from latentwatch.scoring.second_stage import KIND as SECOND_STAGE_KIND
from latentwatch.scoring.second_stage import (
    MAX_REFERENCE_ROWS,
    SecondStage,
    fit_second_stage,
    needed_outputs,
    reference_rows_for,
)

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
CALIBRATION_ROWS_FILE = "calibration_rows.npy"
CALIBRATION_FILE = "calibration.npy"
# Rows the training run kept for the second stage (raw, as loaded); see models/training.py.
TRAIN_ROWS_FILE = "train_rows.npy"
VALIDATION_ROWS_FILE = "validation_rows.npy"
# The second stage standardises its statistics on validation rows when there are this many;
# below that, on the training rows with leave-one-out kNN distances.
MIN_FIT_ROWS = 50
SECOND_STAGE_K = 5
STAGING_PREFIX = ".export-"
# Model names become directory names and Triton model names.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PUBLISH_ATTEMPTS = 5


@dataclass(frozen=True)
class ExportInputs:
    """Everything an export needs from a training run, already loaded."""

    model: nn.Module
    model_kind: str
    decoder: str
    beta: float
    n_features: int
    latent_dim: int
    n_importance_samples: int
    image_shape: list[int] | None
    preprocessing: Preprocessing
    provenance: Provenance
    calibration_rows: NDArray[np.float32]  # (n, F) raw rows, held out from training
    calibration_split: str  # in words
    # Raw training and validation rows for the second stage; None for runs that kept none.
    train_rows: NDArray[np.float32] | None = None
    validation_rows: NDArray[np.float32] | None = None


def export_run(run_dir: Path, repo: Path, name: str, *, default_alpha: float = 0.05) -> Path:
    """Export `run_dir` (from `latentwatch train`) as the next version of `name` in `repo`.

    Returns the new version directory `<repo>/<name>/<version>/`.
    """
    return export_inputs(load_run(Path(run_dir)), Path(repo), name, default_alpha=default_alpha)


def load_run(run_dir: Path) -> ExportInputs:
    """Read a training run directory: the checkpoint and its held-out calibration rows."""
    from latentwatch.models.checkpoint import load_checkpoint

    checkpoint_path = run_dir / CHECKPOINT_FILE
    if not checkpoint_path.is_file():
        raise ExportError(f"{run_dir}: no {CHECKPOINT_FILE}; is this a training run directory?")
    model, checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint.config
    provenance = Provenance(**checkpoint.provenance)
    rows = _load_rows(run_dir / CALIBRATION_ROWS_FILE, config.n_features)
    train_rows = validation_rows = None
    if (run_dir / TRAIN_ROWS_FILE).is_file():
        train_rows = _load_rows(run_dir / TRAIN_ROWS_FILE, config.n_features)
        if (run_dir / VALIDATION_ROWS_FILE).is_file():
            validation_rows = _load_rows(run_dir / VALIDATION_ROWS_FILE, config.n_features)
    else:
        logger.warning(
            "%s: no %s (a run from an older latentwatch): exporting without the %s score",
            run_dir, TRAIN_ROWS_FILE, SECOND_STAGE_KIND,
        )
    return ExportInputs(
        model=model,
        model_kind=config.kind,
        decoder=config.decoder,
        beta=float(config.beta),
        n_features=config.n_features,
        latent_dim=config.latent_dim,
        # The AE scorer draws no samples; 0 says so in the manifest.
        n_importance_samples=config.n_importance_samples if config.kind != "ae" else 0,
        image_shape=list(config.image_shape) if config.image_shape is not None else None,
        preprocessing=Preprocessing(**checkpoint.preprocessing),
        provenance=provenance,
        calibration_rows=rows,
        calibration_split=describe_split(checkpoint.split, provenance, len(rows)),
        train_rows=train_rows,
        validation_rows=validation_rows,
    )


def export_inputs(
    inputs: ExportInputs,
    repo: Path,
    name: str,
    *,
    default_alpha: float = 0.05,
    parity: ParityConfig | None = None,
) -> Path:
    """Export already-loaded inputs; see export_run."""
    parity = parity or ParityConfig()
    if not _NAME.match(name):
        raise ExportError(f"model name {name!r}: use letters, digits, '.', '_' and '-' only")
    if not 0.0 < default_alpha < 1.0:
        raise ExportError(f"default_alpha must be in (0, 1), got {default_alpha}")
    _check_inputs(inputs)
    started_s = time.perf_counter()
    logger.info(
        "exporting %s (%s, %d features, latent %d) to %s",
        name, inputs.model_kind, inputs.n_features, inputs.latent_dim, repo / name,
    )
    graphs = build_graphs(
        inputs.model,
        model_kind=inputs.model_kind,
        n_features=inputs.n_features,
        latent_dim=inputs.latent_dim,
        n_importance_samples=inputs.n_importance_samples,
        preprocessing=inputs.preprocessing,
        seed=inputs.provenance.seed,
    )
    model_dir = repo / name
    created_model_dir = not model_dir.exists()
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=model_dir))
    try:
        write_manifest = _build_version(inputs, graphs, staging, name, default_alpha, parity)
        version_dir = _publish(staging, model_dir, write_manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_model_dir:
            _remove_if_empty(model_dir)
        raise
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
) -> Callable[[str], None]:
    """Write every file but the manifest into `staging`; return the manifest writer."""
    onnx_info: OnnxInfo | None = None
    for step, graph in enumerate(graphs, start=1):
        logger.info("step %d/%d: exporting %s", step, len(graphs) + 2, graph.file)
        onnx_info = export_onnx(graph, staging / graph.file)
    assert onnx_info is not None

    logger.info("step %d/%d: checking parity (ONNX Runtime vs PyTorch)", len(graphs) + 1,
                len(graphs) + 2)
    max_abs_error = _check_all_parity(graphs, staging, inputs.calibration_rows, parity)

    graph_kinds = list(score_kinds(inputs.model_kind))
    stage, stage_spec = None, None
    if inputs.train_rows is not None:
        logger.info("step %d/%d: fitting the second stage (%s)", len(graphs) + 2, len(graphs) + 3,
                    SECOND_STAGE_KIND)
        stage, stage_spec = _fit_second_stage(inputs, staging)
    kinds = [*graph_kinds, SECOND_STAGE_KIND] if stage is not None else graph_kinds
    default_kind, default_reason = _default_kind(kinds)
    reference_spec = _write_reference(inputs, staging) if inputs.train_rows is not None else None

    logger.info("step %d/%d: calibrating on %d held-out rows", len(graphs) + 3, len(graphs) + 3,
                len(inputs.calibration_rows))
    scores = calibration_scores(
        cpu_session(staging / "scorer.onnx"), inputs.calibration_rows, kinds, stage,
        inputs.preprocessing,
    )
    if not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores)).any(axis=1).sum())
        raise ExportError(f"calibration: {bad} held-out rows got non-finite scores")
    np.save(staging / CALIBRATION_FILE, scores, allow_pickle=False)
    warn_if_small(len(scores), default_alpha)

    def _manifest(version: str) -> Manifest:
        return Manifest(
            name=name,
            version=version,
            model_kind=inputs.model_kind,  # type: ignore[arg-type]  # validated by pydantic
            decoder=inputs.decoder,  # type: ignore[arg-type]
            beta=inputs.beta,
            latent_dim=inputs.latent_dim,
            n_importance_samples=inputs.n_importance_samples,
            input=InputSpec(
                shape=[inputs.n_features],
                image_shape=inputs.image_shape,
                preprocessing=inputs.preprocessing,
            ),
            graphs={g.name: _graph_spec(g) for g in graphs},
            score_kinds=kinds,
            default_score_kind=default_kind,
            default_score_reason=default_reason,
            second_stage=stage_spec,
            reference=reference_spec,
            calibration=Calibration(
                file=CALIBRATION_FILE,
                size=len(scores),
                score_kinds=kinds,
                default_alpha=default_alpha,
                split=inputs.calibration_split,
            ),
            parity=Parity(
                batch_sizes=list(parity.batch_sizes),
                rtol=parity.rtol,
                atol=parity.atol,
                max_abs_error=max_abs_error,
            ),
            onnx=onnx_info,
            provenance=inputs.provenance,
            sha256={
                p.name: sha256_file(p)
                for p in sorted(staging.iterdir())
                if p.is_file() and p.name != MANIFEST_FILE
            },
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def write_manifest(version: str) -> None:
        try:
            manifest = _manifest(version)
        except ValidationError as err:  # a contract violation, said in the export's own terms
            raise ExportError(f"the manifest for {name} would be invalid: {err}") from err
        (staging / MANIFEST_FILE).write_text(manifest.to_json())

    return write_manifest


def second_stage_plan(
    model_kind: str, is_image: bool
) -> tuple[tuple[str, ...], Literal["max", "max_abs", "sum"]]:
    """The statistics the second stage combines and how, by model kind and data (measured with
    benchmarks/quality.py).

    Tabular rows: the ELBO and the distance to the nearest training rows. Images: the ELBO and
    the reconstruction error; a Fashion-MNIST model gives MNIST digits a LOWER negative ELBO
    than its own data but a higher reconstruction error. (Two-sided combinations and kNN
    distances over raw pixels measured worse on Fashion-MNIST/MNIST, and pixel kNN is costly.)
    """
    if model_kind == "ae":
        return ("log_recon_error", "log_input_knn"), "max"
    if is_image:
        return ("neg_elbo", "log_recon_error"), "max"
    return ("neg_elbo", "log_input_knn"), "max"


def _default_kind(kinds: list[str]) -> tuple[str, str]:
    if SECOND_STAGE_KIND in kinds:
        return SECOND_STAGE_KIND, (
            "fixed by benchmarks/quality.py: the second stage ranked anomalies best on the "
            "ADBench tabular sets and Fashion-MNIST/MNIST (see README, Score kinds)"
        )
    return kinds[0], f"{kinds[0]}: the run kept no training rows for the second stage"


def _fit_second_stage(inputs: ExportInputs, staging: Path) -> tuple[SecondStage, SecondStageSpec]:
    """Fits the second stage on the run's training rows (reference) and validation rows (fit),
    with the scorer graph just exported, and writes its arrays into `staging`."""
    assert inputs.train_rows is not None
    statistics, combine = second_stage_plan(inputs.model_kind, inputs.image_shape is not None)
    rng = np.random.default_rng(inputs.provenance.seed)
    reference = inputs.train_rows
    n_reference = reference_rows_for(inputs.n_features)
    if len(reference) > n_reference:
        reference = reference[np.sort(rng.choice(len(reference), n_reference, False))]
    if len(reference) <= SECOND_STAGE_K + 1:
        raise ExportError(
            f"the second stage needs more than {SECOND_STAGE_K + 1} training rows, got "
            f"{len(reference)}"
        )
    session = cpu_session(staging / "scorer.onnx")
    needed = list(needed_outputs(statistics))
    reference_outputs = scorer_outputs(session, reference, needed, "second stage reference")
    fit = inputs.validation_rows
    if fit is not None and len(fit) >= MIN_FIT_ROWS:
        if len(fit) > MAX_REFERENCE_ROWS:
            fit = fit[np.sort(rng.choice(len(fit), MAX_REFERENCE_ROWS, False))]
        fit_outputs = scorer_outputs(session, fit, needed, "second stage fit")
        fit_rows = inputs.preprocessing.apply(fit)
        fit_split = f"{len(fit)} validation rows (held out from training, not calibration)"
    else:
        fit_outputs, fit_rows = None, None
        fit_split = (
            f"{len(reference)} training rows, kNN distances leave-one-out (fewer than "
            f"{MIN_FIT_ROWS} validation rows)"
        )
    stage = fit_second_stage(
        statistics, combine, SECOND_STAGE_K, reference_outputs,
        inputs.preprocessing.apply(reference), fit_outputs, fit_rows,
    )
    stage.save(staging / SECOND_STAGE_FILE)
    spec = SecondStageSpec(
        kind=SECOND_STAGE_KIND, file=SECOND_STAGE_FILE, statistics=list(statistics),
        combine=combine, k=SECOND_STAGE_K, n_reference_rows=len(reference),
        fit_split=fit_split,
    )
    logger.info("second stage: %s over %s, fitted on %s", spec.combine,
                ", ".join(statistics), fit_split)
    return stage, spec


def _write_reference(inputs: ExportInputs, staging: Path) -> ReferenceSpec:
    """Encodes the run's training rows with the exported encoder (as the service will) and
    writes their latent reference for bias reports: histograms, deciles and moments."""
    assert inputs.train_rows is not None
    graph = "encoder.onnx" if (staging / "encoder.onnx").is_file() else "scorer.onnx"
    session = cpu_session(staging / graph)
    names = [o.name for o in session.get_outputs()]
    wanted = [n for n in ("latent_mu", "latent_logvar") if n in names]
    outputs = scorer_outputs(session, inputs.train_rows, wanted, "latent reference")
    reference = LatentReference.from_latents(outputs["latent_mu"], outputs.get("latent_logvar"))
    reference.save(staging / REFERENCE_FILE)
    logger.info("latent reference: %d training rows, %d of %d latent dimensions active",
                reference.n_rows, int(reference.active.sum()), reference.latent_dim)
    return ReferenceSpec(
        file=REFERENCE_FILE, n_rows=reference.n_rows,
        fit_split=f"{reference.n_rows} training rows, encoded by {graph}",
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


def _publish(staging: Path, model_dir: Path, write_manifest: Callable[[str], None]) -> Path:
    """Rename the finished staging directory to the next free version, manifest written last.

    Another export of the same model may take the version first; then the next one is tried.
    """
    staging.chmod(0o755)  # mkdtemp makes it private; the service may run as another user
    for _ in range(_PUBLISH_ATTEMPTS):
        version = next_version(model_dir)
        target = model_dir / version
        write_manifest(version)
        if target.exists():
            continue
        try:
            os.rename(staging, target)  # atomic within one filesystem
        except OSError:
            if target.exists():
                continue
            raise
        return target
    raise ExportError(
        f"{model_dir}: could not claim a free version after {_PUBLISH_ATTEMPTS} tries"
    )


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _load_rows(path: Path, n_features: int) -> NDArray[np.float32]:
    if not path.is_file():
        raise ExportError(f"{path}: missing; the run has no held-out calibration rows")
    try:
        rows = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ExportError(f"{path}: not a plain numeric .npy file: {err}") from err
    if rows.ndim != 2 or rows.shape[1] != n_features or len(rows) == 0:
        raise ExportError(f"{path}: shape {rows.shape}, expected (n > 0, {n_features})")
    rows = rows.astype(np.float32, copy=False)
    if not np.isfinite(rows).all():
        raise ExportError(f"{path}: contains NaN or Inf")
    return np.ascontiguousarray(rows)


def _check_inputs(inputs: ExportInputs) -> None:
    pre = inputs.preprocessing
    if len(pre.shift) != inputs.n_features or len(pre.scale) != inputs.n_features:
        raise ExportError(
            f"preprocessing has {len(pre.shift)} shifts and {len(pre.scale)} scales "
            f"for {inputs.n_features} features"
        )
    if inputs.model_kind != "ae" and inputs.n_importance_samples < 1:
        raise ExportError(f"n_importance_samples must be >= 1, got {inputs.n_importance_samples}")
    shape = inputs.calibration_rows.shape
    if len(shape) != 2 or shape[1] != inputs.n_features or shape[0] == 0:
        raise ExportError(
            f"calibration rows have shape {shape}, expected (n > 0, {inputs.n_features})"
        )


def describe_split(split: dict[str, Any], provenance: Provenance, n_rows: int) -> str:
    """How the calibration rows were held out, in words, from what the training run recorded."""
    words = f"{n_rows} rows of {provenance.data} held out at random before training"
    fraction = split.get("calibration_fraction")
    if isinstance(fraction, int | float) and not isinstance(fraction, bool):
        words += f" (fraction {fraction:g}"
        words += f", seed {split['seed']})" if "seed" in split else ")"
    else:
        words += f" (training seed {provenance.seed})"
    return words + "; never used for training or early stopping"
