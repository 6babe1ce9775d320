"""Loading the repository for serving: each version read and verified (repository/reader.py),
its graphs loaded by runtimes (service/runtime.py), checked, warmed up, given metrics and
batchers. A version that fails any step is refused with a logged reason (and the runtimes it had
loaded closed); the others serve. Whatever a version's files hold, loading it gives a served
version or a VersionRefused: an unexpected exception from any step becomes one too, with its
traceback in the log, so one bad version never stops the server.

It runs on the server's event loop, which keeps answering health checks meanwhile: reading and
verifying files goes to the executor, and the runtimes put their own blocking work there.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from latentwatch.errors import VersionRefused, quote
from latentwatch.repository.layout import is_safe_name, is_version_name
from latentwatch.repository.manifest import Manifest
from latentwatch.repository.reader import ReadPolicy, VersionFiles, read_version
from latentwatch.scoring.contract import InputContract
from latentwatch.scoring.pipeline import ScoringPipeline
from latentwatch.service.batch_scoring import BatchScoring
from latentwatch.service.batcher import MicroBatcher
from latentwatch.service.metrics import ServiceMetrics
from latentwatch.service.repository import ModelRepository, ModelVersion, Refusal, decode
from latentwatch.service.runtime import Runtime, input_names, make_runtime, output_names
from latentwatch.service.settings import Settings

log = logging.getLogger(__name__)

WARMUP_ROWS = 2  # two rows also proves the batch axis is dynamic
# What every served version must offer today: Score, Encode and BiasReport need both.
# Versions of families that only generate or translate wait for the RPCs that serve them.
SERVED_CAPABILITIES = ("score", "encode")


async def load_repository(
    repo: Path,
    found: list[tuple[str, str, Path]],
    settings: Settings,
    metrics: ServiceMetrics,
    executor: Executor | None = None,
) -> ModelRepository:
    """Loads the versions `find_versions` found, one after the other, on the event loop; the
    blocking work runs in `executor` (None: the loop's default)."""
    repository = ModelRepository(repo)
    for name, version, version_dir in found:
        try:
            loaded = await load_version(name, version, version_dir, settings, metrics, executor)
        except VersionRefused as err:
            log.error("refusing model %s version %s: %s", _shown(name), _shown(version), err)
            repository.refused.append(Refusal(name, version, str(err)))
            metrics.set_refused(name, version)
            continue
        repository.versions.setdefault(name, {})[version] = loaded
        m = loaded.manifest
        log.info(
            "loaded model %s version %s (%s, %d features, %d calibration rows) on %s, "
            "%d intra-op threads",
            name, version, m.model_kind, m.n_features, m.require_scoring().calibration.size,
            loaded.provider, loaded.intra_op_threads,
        )
    return repository


def _shown(name: str) -> str:
    """A model or version name for a log line: as it is when the walker's rule allows it (it
    cannot forge a line), quoted otherwise."""
    return name if is_safe_name(name) else quote(name)


def read_policy(settings: Settings) -> ReadPolicy:
    """What the settings ask of every version's files: size limit and signatures."""
    return ReadPolicy(
        max_file_bytes=settings.max_model_file_bytes,
        signing_keys=settings.signing_keys,
        require_signed=settings.require_signed,
    )


async def load_version(
    name: str,
    version: str,
    version_dir: Path,
    settings: Settings,
    metrics: ServiceMetrics,
    executor: Executor | None = None,
) -> ModelVersion:
    """The version, loaded, checked and warmed up; VersionRefused, with the reason, for any
    failure (an unexpected exception's traceback goes to the log)."""
    try:
        return await _load_version(name, version, version_dir, settings, metrics, executor)
    except VersionRefused:
        raise
    except Exception as err:  # a bug or an odd file: a refusal of this version, not a crash
        log.warning("loading model %s version %s raised an unexpected error", _shown(name),
                    _shown(version), exc_info=True)
        reason = " ".join(str(err).split())
        raise VersionRefused(
            f"unexpected {type(err).__name__} while loading: {quote(reason)}"
        ) from err


async def _load_version(
    name: str,
    version: str,
    version_dir: Path,
    settings: Settings,
    metrics: ServiceMetrics,
    executor: Executor | None,
) -> ModelVersion:
    if not (is_safe_name(name) and is_version_name(version)):
        raise VersionRefused("not a model and version directory name the repository allows")
    loop = asyncio.get_running_loop()
    # sha256 of every file and the numpy loads block: in the executor, not on the loop.
    files = await loop.run_in_executor(
        executor, read_version, name, version, version_dir, read_policy(settings)
    )
    lacking = [c for c in SERVED_CAPABILITIES if c not in files.manifest.capabilities]
    if lacking:
        raise VersionRefused(
            f"this server serves versions with the capabilities {list(SERVED_CAPABILITIES)}; "
            f"this one has {files.manifest.capabilities} (no {', '.join(lacking)})"
        )
    loaded: list[Runtime] = []
    try:
        scorer, encoder, decoder = await _load_runtimes(files, settings, executor, loaded)
        pipeline = files.pipeline()
        check_graphs(files.manifest, pipeline, scorer, encoder, decoder)
        if settings.warmup:
            await warm_up(files.manifest, pipeline, scorer, encoder, decoder)
        return _serve(files, pipeline, settings, metrics, executor, scorer, encoder, decoder)
    except BaseException:
        # A served version's runtimes are closed with the repository; a refused one's here.
        await _close_all(loaded)
        raise


async def _load_runtimes(
    files: VersionFiles, settings: Settings, executor: Executor | None, loaded: list[Runtime]
) -> tuple[Runtime, Runtime, Runtime | None]:
    """(scorer, encoder or the scorer, decoder or None), loaded; each also added to `loaded`."""
    graphs = files.manifest.graphs

    async def load(graph: str) -> Runtime:
        file = graphs[graph].file
        runtime = await make_runtime(
            files.graph_path(graph), settings, executor, sha256=files.manifest.sha256[file]
        )
        loaded.append(runtime)
        return runtime

    try:
        scorer = await load("scorer")
        encoder = await load("encoder") if "encoder" in graphs else scorer
        decoder = await load("decoder") if "decoder" in graphs else None
    except VersionRefused:
        raise
    except Exception as err:  # onnxruntime raises several unrelated types for bad graphs
        raise VersionRefused(f"ONNX Runtime cannot load a graph: {err}") from err
    return scorer, encoder, decoder


async def _close_all(runtimes: list[Runtime]) -> None:
    for runtime in runtimes:
        try:
            await runtime.close()
        except Exception:  # the refusal is what matters; this only goes to the log
            log.warning("closing a runtime of a refused version failed", exc_info=True)


def check_graphs(
    manifest: Manifest,
    pipeline: ScoringPipeline,
    scorer: Runtime,
    encoder: Runtime,
    decoder: Runtime | None,
) -> None:
    """VersionRefused unless the graphs take and give what the manifest promises."""
    _check_graph("scorer", scorer, manifest, list(pipeline.graph_outputs))
    _check_graph("encoder", encoder, manifest, ["latent_mu"])
    if decoder is not None:
        spec = manifest.graphs["decoder"]
        names = input_names(decoder)
        if len(names) != 1 or not spec.outputs:
            raise VersionRefused(
                f"decoder graph takes inputs {list(names)} and the manifest lists "
                f"outputs {[t.name for t in spec.outputs]}; expected one latent input and an "
                "output"
            )
        if spec.outputs[0].name not in output_names(decoder):
            raise VersionRefused(f"decoder graph lacks output {spec.outputs[0].name!r}")


def _check_graph(what: str, runtime: Runtime, manifest: Manifest, outputs: list[str]) -> None:
    names = input_names(runtime)
    if list(names) != [manifest.input.name]:
        raise VersionRefused(
            f"{what} graph takes inputs {list(names)}, expected [{manifest.input.name!r}]"
        )
    missing = sorted(set(outputs) - set(output_names(runtime)))
    if missing:
        raise VersionRefused(f"{what} graph lacks outputs {missing}")


def _serve(
    files: VersionFiles,
    pipeline: ScoringPipeline,
    settings: Settings,
    metrics: ServiceMetrics,
    executor: Executor | None,
    scorer: Runtime,
    encoder: Runtime,
    decoder: Runtime | None,
) -> ModelVersion:
    """The version's metrics and batchers: what serves it."""
    name, version, manifest = files.manifest.name, files.manifest.version, files.manifest
    label = f"{name}:{version}"
    version_metrics = metrics.add_version(name, version, scorer.provider)

    def on_run(n_rows: int) -> None:  # scorer runs only: batch_rows and rows_scored
        version_metrics.batch_rows.observe(n_rows)
        version_metrics.rows_scored += n_rows

    def batcher(runtime: Runtime, **kw: Any) -> MicroBatcher:
        # A runtime that batches itself gets each request at once: no waiting for a batch here.
        delay_ms = 0.0 if runtime.batches_itself else settings.max_batch_delay_ms
        return MicroBatcher(
            runtime, max_batch_rows=settings.max_batch_rows, max_batch_delay_ms=delay_ms,
            max_queue_rows=settings.max_queue_rows, **kw,
        )

    score_batcher = batcher(scorer, on_run=on_run, name=label)
    encode_batcher = score_batcher
    if encoder is not scorer:
        encode_batcher = batcher(encoder, name=f"{label} encoder")
        version_metrics.queued_rows = lambda: score_batcher.queued_rows + encode_batcher.queued_rows
    else:
        version_metrics.queued_rows = lambda: score_batcher.queued_rows
    runtimes = tuple(dict.fromkeys(r for r in (scorer, encoder, decoder) if r is not None))
    return ModelVersion(
        name=name,
        version=version,
        manifest=manifest,
        manifest_json=files.manifest_json,
        contract=InputContract.from_manifest(manifest, settings.max_request_rows),
        provider=scorer.provider,
        intra_op_threads=int(getattr(scorer, "intra_op_threads", 0)),
        pipeline=pipeline,
        scorer=score_batcher,
        scoring=BatchScoring(pipeline, version_metrics, executor),
        encoder=encode_batcher,
        metrics=version_metrics,
        decoder=decoder,
        reference=files.reference,
        runtimes=runtimes,
    )


async def warm_up(
    manifest: Manifest,
    pipeline: ScoringPipeline,
    scorer: Runtime,
    encoder: Runtime,
    decoder: Runtime | None,
) -> None:
    """One run of every graph on plausible rows; VersionRefused when one fails or gives the
    wrong shapes, or the pipeline cannot score the scorer's outputs."""
    await _warm_up(scorer, manifest, pipeline)
    if encoder is not scorer:
        await _warm_up(encoder, manifest, None)
    if decoder is not None:
        await _warm_up_decoder(decoder, manifest)


async def _warm_up_decoder(runtime: Runtime, manifest: Manifest) -> None:
    latent_dim = _latent_dim(manifest)
    if latent_dim is None:
        raise VersionRefused("a decoder graph needs the manifest's latent section")
    try:
        out = await decode(runtime, manifest, np.zeros((WARMUP_ROWS, latent_dim)))
    except Exception as err:
        raise VersionRefused(f"decoder warm-up run failed: {err}") from err
    if out.shape != (WARMUP_ROWS, manifest.n_features):
        raise VersionRefused(
            f"decoder output has shape {list(out.shape)} for {WARMUP_ROWS} latent points; "
            f"expected [{WARMUP_ROWS}, {manifest.n_features}]"
        )


async def _warm_up(
    runtime: Runtime, manifest: Manifest, pipeline: ScoringPipeline | None
) -> None:
    """One run on plausible rows (the training mean); checks the per-row outputs' shapes, and
    that the second stage scores them."""
    rows = np.zeros((WARMUP_ROWS, manifest.n_features), dtype=np.float32)  # (2, F)
    pre = manifest.input.preprocessing
    if {len(pre.shift), len(pre.scale)} <= {1, manifest.n_features}:
        rows = pre.invert(rows).astype(np.float32)  # model-space 0 in raw units: the shift
    try:
        outputs = await runtime.infer({manifest.input.name: rows})
    except Exception as err:
        raise VersionRefused(f"warm-up run failed: {err}") from err
    for name in pipeline.graph_kinds if pipeline is not None else ():
        if outputs[name].shape != (WARMUP_ROWS,):
            raise VersionRefused(
                f"output {name!r} has shape {list(outputs[name].shape)} for {WARMUP_ROWS} rows; "
                f"per-row scores must be ({WARMUP_ROWS},)"
            )
    if pipeline is not None and pipeline.stage_kinds:
        try:
            stage = pipeline.scores(outputs, rows, pipeline.stage_kinds)
        except Exception as err:
            raise VersionRefused(f"second stage failed on the warm-up rows: {err}") from err
        for scores in stage.values():
            if scores.shape != (WARMUP_ROWS,) or not np.isfinite(scores).all():
                raise VersionRefused("second stage gave no finite per-row scores on warm-up rows")
    for name in ("latent_mu", "latent_logvar"):
        if name in outputs and outputs[name].shape != (WARMUP_ROWS, _latent_dim(manifest)):
            raise VersionRefused(
                f"output {name!r} has shape {list(outputs[name].shape)}, expected "
                f"[{WARMUP_ROWS}, {_latent_dim(manifest)}]"
            )


def _latent_dim(manifest: Manifest) -> int | None:
    return manifest.latent.latent_dim if manifest.latent is not None else None
