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
from latentwatch.service import generative_graphs
from latentwatch.service.batch_scoring import BatchScoring
from latentwatch.service.batcher import MicroBatcher
from latentwatch.service.metrics import ServiceMetrics
from latentwatch.service.repository import (
    ModelRepository,
    ModelVersion,
    Refusal,
    ScoringParts,
    decode,
)
from latentwatch.service.runtime import GraphRef, Runtime, input_names, make_runtime, output_names
from latentwatch.service.settings import Settings

log = logging.getLogger(__name__)

WARMUP_ROWS = 2  # two rows also proves the batch axis is dynamic
# What a version that scores must offer: Score, Encode and BiasReport need both. Versions of
# families that only generate or translate (gan, cgan, pix2pix) offer neither.
SERVED_CAPABILITIES = ("score", "encode")
GENERATIVE_CAPABILITIES = ("generate", "translate")
# The graphs a served version's runtimes run; a manifest's other graphs are not loaded.
SERVED_GRAPHS = ("scorer", "encoder", "decoder", "generator", "translator")


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
        served = (f"{m.scoring.calibration.size} calibration rows" if m.scoring is not None
                  else f"capabilities {', '.join(m.capabilities)}")
        log.info(
            "loaded model %s version %s (%s, %d features, %s) on %s, %d intra-op threads",
            name, version, m.model_kind, m.n_features, served, loaded.provider,
            loaded.intra_op_threads,
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
    manifest = files.manifest
    _check_served(manifest)
    loaded: list[Runtime] = []
    try:
        graphs = await _load_runtimes(files, settings, executor, loaded)
        pipeline = None
        decoder = graphs.get("decoder")
        if "scorer" in graphs:
            pipeline = files.pipeline()
            scorer = graphs["scorer"]
            encoder = graphs.get("encoder", scorer)
            check_graphs(manifest, pipeline, scorer, encoder, decoder)
        _check_generative(manifest, graphs)
        if settings.warmup:
            if pipeline is not None:
                await warm_up(manifest, pipeline, scorer, encoder, decoder)
            await _warm_up_generative(manifest, graphs)
        return _serve(files, pipeline, settings, metrics, executor, graphs)
    except BaseException:
        # A served version's runtimes are closed with the repository; a refused one's here.
        await _close_all(loaded)
        raise


def _check_served(manifest: Manifest) -> None:
    """VersionRefused for a version this server has no RPCs for: one that scores must also
    encode, and one that does neither only generates or translates."""
    caps = set(manifest.capabilities)
    lacking = [c for c in SERVED_CAPABILITIES if c not in caps]
    generative_only = bool(caps) and caps <= set(GENERATIVE_CAPABILITIES)
    if lacking and not generative_only:
        raise VersionRefused(
            f"this server serves versions with the capabilities {list(SERVED_CAPABILITIES)} "
            f"(or only {' and '.join(GENERATIVE_CAPABILITIES)}); this one has "
            f"{manifest.capabilities} (no {', '.join(lacking)})"
        )


def _check_generative(manifest: Manifest, graphs: dict[str, Runtime]) -> None:
    if "generator" in graphs:
        generative_graphs.check_generator(manifest, graphs["generator"])
    if "translator" in graphs:
        generative_graphs.check_translator(manifest, graphs["translator"])
    if "decoder" in graphs and "scorer" not in graphs:
        raise VersionRefused("a decoder graph is served with a scorer and encoder only")


async def _warm_up_generative(manifest: Manifest, graphs: dict[str, Runtime]) -> None:
    if "generator" in graphs:
        await generative_graphs.warm_up_generator(manifest, graphs["generator"])
    if "translator" in graphs:
        await generative_graphs.warm_up_translator(manifest, graphs["translator"])


async def _load_runtimes(
    files: VersionFiles, settings: Settings, executor: Executor | None, loaded: list[Runtime]
) -> dict[str, Runtime]:
    """Graph name -> its runtime, loaded, for each of SERVED_GRAPHS the manifest lists; each
    also added to `loaded`."""
    graphs = files.manifest.graphs

    async def load(graph: str) -> Runtime:
        file = graphs[graph].file
        ref = GraphRef(files.manifest.name, files.manifest.version, graph, graphs[graph])
        runtime = await make_runtime(
            files.graph_path(graph), settings, executor, sha256=files.manifest.sha256[file],
            ref=ref,
        )
        loaded.append(runtime)
        return runtime

    runtimes: dict[str, Runtime] = {}
    try:
        for graph in SERVED_GRAPHS:
            if graph in graphs:
                runtimes[graph] = await load(graph)
    except VersionRefused:
        raise
    except Exception as err:  # onnxruntime raises several unrelated types for bad graphs
        raise VersionRefused(f"ONNX Runtime cannot load a graph: {err}") from err
    return runtimes


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
    pipeline: ScoringPipeline | None,
    settings: Settings,
    metrics: ServiceMetrics,
    executor: Executor | None,
    graphs: dict[str, Runtime],
) -> ModelVersion:
    """The version's metrics and batchers: what serves it."""
    name, version, manifest = files.manifest.name, files.manifest.version, files.manifest
    label = f"{name}:{version}"
    primary = next(graphs[g] for g in ("scorer", "generator", "translator") if g in graphs)
    version_metrics = metrics.add_version(name, version, primary.provider)

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

    parts = None
    if pipeline is not None:
        scorer = graphs["scorer"]
        score_batcher = batcher(scorer, on_run=on_run, name=label)
        encode_batcher = score_batcher
        if graphs.get("encoder", scorer) is not scorer:
            encode_batcher = batcher(graphs["encoder"], name=f"{label} encoder")
        parts = ScoringParts(
            pipeline, score_batcher, BatchScoring(pipeline, version_metrics, executor),
            encode_batcher,
        )
    decoder = graphs.get("decoder")
    generator = graphs.get("generator")
    translator = graphs.get("translator")
    served = ModelVersion(
        name=name,
        version=version,
        manifest=manifest,
        manifest_json=files.manifest_json,
        contract=InputContract.from_manifest(manifest, settings.max_request_rows),
        provider=primary.provider,
        intra_op_threads=int(getattr(primary, "intra_op_threads", 0)),
        scoring_parts=parts,
        metrics=version_metrics,
        decoder=decoder,
        reference=files.reference,
        decoding=None if decoder is None else batcher(decoder, name=f"{label} decoder"),
        generator=None if generator is None else batcher(
            generative_graphs.serving_runtime(manifest, generator), name=f"{label} generator"
        ),
        translator=None if translator is None else batcher(
            translator, name=f"{label} translator"
        ),
        runtimes=tuple(dict.fromkeys(graphs.values())),
        explain=files.explain if decoder is not None else None,
    )
    version_metrics.queued_rows = lambda: sum(b.queued_rows for b in served.batchers)
    return served


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
