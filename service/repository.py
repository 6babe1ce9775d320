"""The model repository: every version found, verified, loaded and warmed up, or refused.

A version is refused (with a logged reason) when its manifest is unreadable or describes another
directory, a file does not match its sha256 (or is not listed at all), the calibration scores or
the latent reference do not fit the manifest, or a graph does not load or does not give what the
manifest promises. The other versions keep serving.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.drift import LatentReference
from latentwatch.errors import ModelNotFound
from latentwatch.repository.manifest import MANIFEST_FILE, Manifest, verify_files
from latentwatch.scoring.contract import InputContract, p_values
from latentwatch.scoring.second_stage import KIND as STAGE_KIND
from latentwatch.scoring.second_stage import SecondStage
from latentwatch.service.batcher import MicroBatcher, Outputs
from latentwatch.service.metrics import ServiceMetrics, VersionMetrics, score_buckets
from latentwatch.service.runtime import OrtRuntime, Runtime
from latentwatch.service.settings import Settings

log = logging.getLogger(__name__)

P_VALUE = "p_value"  # added to the scorer's outputs by the batch postprocessing
WARMUP_ROWS = 2  # two rows also proves the batch axis is dynamic


class VersionRefused(Exception):
    """A version that cannot be served; the message says why."""


@dataclass
class ModelVersion:
    name: str
    version: str
    manifest: Manifest
    manifest_json: str
    contract: InputContract
    provider: str
    intra_op_threads: int
    second_stage: SecondStage | None  # computes its kind from the scorer's outputs
    calibration: dict[str, NDArray[np.float64]]  # kind -> ascending calibration scores
    scorer: MicroBatcher
    encoder: MicroBatcher  # the encoder graph, or the scorer when there is none
    metrics: VersionMetrics
    # latent (k, Z) -> decoder means (k, F) in model space; None without a decoder graph.
    decoder: Runtime | None = None
    # The training data's latent summary for bias-report drift; None when not exported.
    reference: LatentReference | None = None


@dataclass(frozen=True)
class Refusal:
    name: str
    version: str
    reason: str


@dataclass
class ModelRepository:
    path: Path
    versions: dict[str, dict[str, ModelVersion]] = field(default_factory=dict)  # ascending
    refused: list[Refusal] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(v) for v in self.versions.values())

    def get(self, name: str, version: str = "") -> ModelVersion:
        """The named version; "" selects the latest (largest) loaded version."""
        versions = self.versions.get(name)
        if versions is None:
            known = "; ".join(f"{n} (versions {', '.join(v)})" for n, v in self.versions.items())
            raise ModelNotFound(f"no model {name!r}; this server has: {known or 'no models'}")
        if not version:
            return versions[next(reversed(versions))]
        found = versions.get(version)
        if found is None:
            refused = [r.version for r in self.refused if r.name == name and r.version == version]
            note = " (it exists but was refused at load: see the server log)" if refused else ""
            raise ModelNotFound(
                f"model {name!r} has no version {version!r}{note}; loaded versions: "
                f"{', '.join(versions)}"
            )
        return found

    async def close(self) -> None:
        for versions in self.versions.values():
            for v in versions.values():
                await v.scorer.close()
                if v.encoder is not v.scorer:
                    await v.encoder.close()


def find_versions(repo: Path) -> list[tuple[str, str, Path]]:
    """(model, version, directory) for every <repo>/<model>/<integer>/, versions ascending."""
    found: list[tuple[str, str, Path]] = []
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        dirs = [p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        for ignored in sorted(p.name for p in dirs if not p.name.isdigit()):
            log.warning("ignoring %s/%s: version directories are integers", model_dir.name, ignored)
        versions = sorted((p for p in dirs if p.name.isdigit()), key=lambda p: int(p.name))
        if not versions:
            log.warning("model directory %s holds no version directories", model_dir)
        found.extend((model_dir.name, p.name, p) for p in versions)
    return found


def load_repository(
    repo: Path,
    found: list[tuple[str, str, Path]],
    settings: Settings,
    metrics: ServiceMetrics,
    executor: Executor | None = None,
) -> ModelRepository:
    """Blocking: loads the versions `find_versions` found (run it off the event loop)."""
    repository = ModelRepository(repo)
    for name, version, version_dir in found:
        try:
            loaded = load_version(name, version, version_dir, settings, metrics, executor)
        except VersionRefused as err:
            log.error("refusing model %s version %s: %s", name, version, err)
            repository.refused.append(Refusal(name, version, str(err)))
            metrics.set_refused(name, version)
            continue
        repository.versions.setdefault(name, {})[version] = loaded
        m = loaded.manifest
        log.info(
            "loaded model %s version %s (%s, %d features, %d calibration rows) on %s, "
            "%d intra-op threads",
            name, version, m.model_kind, m.n_features, m.calibration.size, loaded.provider,
            loaded.intra_op_threads,
        )
    return repository


def load_version(
    name: str,
    version: str,
    version_dir: Path,
    settings: Settings,
    metrics: ServiceMetrics,
    executor: Executor | None = None,
) -> ModelVersion:
    manifest, manifest_json = read_manifest(name, version, version_dir)
    calibration = read_calibration(version_dir, manifest)
    reference = read_reference(version_dir, manifest)
    try:
        scorer = OrtRuntime(version_dir / manifest.graphs["scorer"].file, settings.intra_op_threads)
        encoder = (
            OrtRuntime(version_dir / manifest.graphs["encoder"].file, settings.intra_op_threads)
            if "encoder" in manifest.graphs
            else scorer
        )
        decoder = (
            OrtRuntime(version_dir / manifest.graphs["decoder"].file, settings.intra_op_threads)
            if "decoder" in manifest.graphs
            else None
        )
    except Exception as err:  # onnxruntime raises several unrelated types for bad graphs
        raise VersionRefused(f"ONNX Runtime cannot load a graph: {err}") from err
    stage = read_second_stage(version_dir, manifest)
    graph_kinds = [k for k in manifest.score_kinds if stage is None or k != STAGE_KIND]
    needed = list(dict.fromkeys([*graph_kinds, *(stage.needs_outputs if stage else ())]))
    _check_graph("scorer", scorer, manifest, needed)
    _check_graph("encoder", encoder, manifest, ["latent_mu"])
    if decoder is not None:
        _check_decoder(decoder, manifest)
    if settings.warmup:
        _warm_up(scorer, manifest, graph_kinds, stage)
        if encoder is not scorer:
            _warm_up(encoder, manifest, [])
        if decoder is not None:
            _warm_up_decoder(decoder, manifest)

    label = f"{name}:{version}"
    default_calibration = calibration[manifest.default_score_kind]
    version_metrics = metrics.add_version(
        name, version, score_buckets(default_calibration), scorer.provider
    )

    preprocessing = manifest.input.preprocessing
    default_kind = manifest.default_score_kind

    def add_p_values(rows: NDArray[np.float32], outputs: Outputs, extra: bool) -> Outputs:
        # Worker thread, once per batch: the second stage when a request in the batch needs it,
        # then the default kind's p-values and score metrics for every row at once.
        if stage is not None and extra:
            outputs[STAGE_KIND] = stage.score(outputs, preprocessing.apply(rows))
        version_metrics.rows_scored += rows.shape[0]
        scores = outputs.get(default_kind)
        if scores is not None:
            p = p_values(default_calibration, scores)
            outputs[P_VALUE] = p
            version_metrics.score.observe_many(scores)
            version_metrics.p_value.observe_many(p)
        return outputs

    batch_limits = dict(
        max_batch_rows=settings.max_batch_rows,
        max_batch_delay_ms=settings.max_batch_delay_ms,
        max_queue_rows=settings.max_queue_rows,
    )
    # batch_rows counts scorer runs only, so each histogram keeps a single writer thread.
    score_batcher = MicroBatcher(
        scorer, postprocess=add_p_values, on_run=version_metrics.batch_rows.observe,
        executor=executor, name=label, **batch_limits,
    )
    encode_batcher = score_batcher
    if encoder is not scorer:
        encode_batcher = MicroBatcher(
            encoder, executor=executor, name=f"{label} encoder", **batch_limits
        )
        version_metrics.queued_rows = lambda: score_batcher.queued_rows + encode_batcher.queued_rows
    else:
        version_metrics.queued_rows = lambda: score_batcher.queued_rows
    return ModelVersion(
        name=name,
        version=version,
        manifest=manifest,
        manifest_json=manifest_json,
        contract=InputContract.from_manifest(manifest, settings.max_request_rows),
        provider=scorer.provider,
        intra_op_threads=scorer.intra_op_threads,
        second_stage=stage,
        calibration=calibration,
        scorer=score_batcher,
        encoder=encode_batcher,
        metrics=version_metrics,
        decoder=decoder,
        reference=reference,
    )


def read_manifest(name: str, version: str, version_dir: Path) -> tuple[Manifest, str]:
    try:
        manifest_json = (version_dir / MANIFEST_FILE).read_text()
        manifest = Manifest.model_validate_json(manifest_json)
    except FileNotFoundError as err:
        raise VersionRefused(f"no {MANIFEST_FILE}") from err
    except (OSError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        raise VersionRefused(f"{MANIFEST_FILE} is not valid: {err}") from err
    if (manifest.name, manifest.version) != (name, version):
        raise VersionRefused(
            f"{MANIFEST_FILE} describes {manifest.name} version {manifest.version}, "
            f"not the directory it is in"
        )
    used = [g.file for g in manifest.graphs.values() if g.file] + [manifest.calibration.file]
    if manifest.second_stage is not None:
        used.append(manifest.second_stage.file)
    if manifest.reference is not None:
        used.append(manifest.reference.file)
    unlisted = sorted(set(used) - set(manifest.sha256))
    if unlisted:
        raise VersionRefused(f"files without a sha256 in {MANIFEST_FILE}: {unlisted}")
    problems = verify_files(version_dir, manifest)
    if problems:
        raise VersionRefused("; ".join(problems))
    return manifest, manifest_json


def read_calibration(version_dir: Path, manifest: Manifest) -> dict[str, NDArray[np.float64]]:
    spec = manifest.calibration
    try:
        scores = np.load(version_dir / spec.file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise VersionRefused(f"{spec.file} cannot be read: {err}") from err
    expected = (spec.size, len(spec.score_kinds))
    if scores.shape != expected or scores.dtype.kind != "f":
        raise VersionRefused(
            f"{spec.file} holds {list(scores.shape)} {scores.dtype}; the manifest promises "
            f"{list(expected)} float64"
        )
    if not np.isfinite(scores).all():
        raise VersionRefused(f"{spec.file} holds NaN or infinite scores")
    columns = np.sort(scores.astype(np.float64), axis=0)  # sorted once, searched per batch
    return {kind: np.ascontiguousarray(columns[:, i]) for i, kind in enumerate(spec.score_kinds)}


def read_reference(version_dir: Path, manifest: Manifest) -> LatentReference | None:
    """The training latent reference the manifest lists (its sha256 is already verified)."""
    spec = manifest.reference
    if spec is None:
        return None
    try:
        reference = LatentReference.load(version_dir / spec.file)
    except (OSError, ValueError) as err:  # a zip that is not one raises BadZipFile, an OSError
        raise VersionRefused(f"{spec.file} cannot be used: {err}") from err
    if reference.latent_dim != manifest.latent_dim:
        raise VersionRefused(
            f"{spec.file} describes {reference.latent_dim} latent dimensions; the model has "
            f"{manifest.latent_dim}"
        )
    return reference


def read_second_stage(version_dir: Path, manifest: Manifest) -> SecondStage | None:
    spec = manifest.second_stage
    if spec is None:
        return None
    if spec.kind != STAGE_KIND:
        raise VersionRefused(f"second stage kind {spec.kind!r} is unknown (this server computes "
                             f"{STAGE_KIND!r})")
    try:
        stage = SecondStage.load(version_dir / spec.file, spec.statistics, spec.combine, spec.k)
    except (OSError, ValueError) as err:
        raise VersionRefused(f"{spec.file} cannot be used: {err}") from err
    if "log_latent_knn" in stage.statistics and stage.latent_reference.shape[1] != (
        manifest.latent_dim
    ):
        raise VersionRefused(f"{spec.file}: latent reference width differs from the latent_dim")
    if "log_input_knn" in stage.statistics and stage.input_reference.shape[1] != (
        manifest.n_features
    ):
        raise VersionRefused(f"{spec.file}: input reference width differs from the features")
    return stage


def _check_graph(what: str, runtime: Runtime, manifest: Manifest, outputs: list[str]) -> None:
    if list(runtime.input_names) != [manifest.input.name]:
        raise VersionRefused(
            f"{what} graph takes inputs {list(runtime.input_names)}, "
            f"expected [{manifest.input.name!r}]"
        )
    missing = sorted(set(outputs) - set(runtime.output_names))
    if missing:
        raise VersionRefused(f"{what} graph lacks outputs {missing}")


def _check_decoder(runtime: Runtime, manifest: Manifest) -> None:
    spec = manifest.graphs["decoder"]
    if len(runtime.input_names) != 1 or not spec.outputs:
        raise VersionRefused(
            f"decoder graph takes inputs {list(runtime.input_names)} and the manifest lists "
            f"outputs {[t.name for t in spec.outputs]}; expected one latent input and an output"
        )
    if spec.outputs[0].name not in runtime.output_names:
        raise VersionRefused(f"decoder graph lacks output {spec.outputs[0].name!r}")


def decode(runtime: Runtime, manifest: Manifest, latent: NDArray) -> NDArray[np.float32]:
    """(k, Z) latent points -> (k, F) decoder means in model space (blocking; any thread)."""
    z = np.ascontiguousarray(latent, dtype=np.float32)
    outputs = runtime.run({runtime.input_names[0]: z})
    return np.asarray(outputs[manifest.graphs["decoder"].outputs[0].name], dtype=np.float32)


def _warm_up_decoder(runtime: Runtime, manifest: Manifest) -> None:
    try:
        out = decode(runtime, manifest, np.zeros((WARMUP_ROWS, manifest.latent_dim)))
    except Exception as err:
        raise VersionRefused(f"decoder warm-up run failed: {err}") from err
    if out.shape != (WARMUP_ROWS, manifest.n_features):
        raise VersionRefused(
            f"decoder output has shape {list(out.shape)} for {WARMUP_ROWS} latent points; "
            f"expected [{WARMUP_ROWS}, {manifest.n_features}]"
        )


def _warm_up(
    runtime: Runtime, manifest: Manifest, per_row: list[str], stage: SecondStage | None = None
) -> None:
    """One run on plausible rows (the training mean); checks the per-row outputs' shapes, and
    that the second stage scores them."""
    rows = np.zeros((WARMUP_ROWS, manifest.n_features), dtype=np.float32)  # (2, F)
    shift = manifest.input.preprocessing.shift
    if len(shift) in (1, manifest.n_features):
        rows += np.asarray(shift, dtype=np.float32)
    try:
        outputs = runtime.run({manifest.input.name: rows})
    except Exception as err:
        raise VersionRefused(f"warm-up run failed: {err}") from err
    for name in per_row:
        if outputs[name].shape != (WARMUP_ROWS,):
            raise VersionRefused(
                f"output {name!r} has shape {list(outputs[name].shape)} for {WARMUP_ROWS} rows; "
                f"per-row scores must be ({WARMUP_ROWS},)"
            )
    if stage is not None:
        try:
            scores = stage.score(outputs, manifest.input.preprocessing.apply(rows))
        except Exception as err:
            raise VersionRefused(f"second stage failed on the warm-up rows: {err}") from err
        if scores.shape != (WARMUP_ROWS,) or not np.isfinite(scores).all():
            raise VersionRefused("second stage gave no finite per-row scores on warm-up rows")
    for name in ("latent_mu", "latent_logvar"):
        if name in outputs and outputs[name].shape != (WARMUP_ROWS, manifest.latent_dim):
            raise VersionRefused(
                f"output {name!r} has shape {list(outputs[name].shape)}, expected "
                f"[{WARMUP_ROWS}, {manifest.latent_dim}]"
            )
