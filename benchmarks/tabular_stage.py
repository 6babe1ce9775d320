"""The tabular default score's cost (part of throughput.py): the default kind, the VAE's graph
outputs plus the kNN second stage, against a graph-only kind, through the real service.

A tabular VAE is trained briefly on the normal rows of an ADBench table (ADBench's shuttle when
the development data has it, else Gaussian rows of the same width), exported, and served; both
kinds are measured with 256-row Score requests from 4 callers, alternating in rounds so that a
shared machine's drifting load falls on both alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from grpc_load import LoadResult, run_load
from numpy.typing import NDArray
from processes import CpuWatch, start_latentwatch

from latentwatch.client.client import LatentwatchClient
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.repository.manifest import Manifest
from latentwatch.wire.tensors import to_tensor

logger = logging.getLogger("throughput")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHUTTLE = REPO_ROOT / ".." / "shared" / "data" / "adbench" / "32_shuttle.npz"
MODEL_NAME = "tabular-vae"
ROWS = 256
CONCURRENCY = 4
ROUNDS = 2
# The graph-only kind compared: the graph statistic the tabular second stage builds on.
GRAPH_KIND = "neg_elbo"


def _table(work: Path) -> tuple[Path, NDArray[np.float32], str]:
    """(training rows file, rows to score, description)."""
    if SHUTTLE.is_file():
        with np.load(SHUTTLE, allow_pickle=False) as data:
            X, y = data["X"].astype(np.float32), data["y"]
        normal = X[y == 0]
        scored = X[np.random.default_rng(0).permutation(X.shape[0])[:4096]]
        described = f"ADBench 32_shuttle ({X.shape[1]} features), trained on its normal rows"
    else:
        rng = np.random.default_rng(0)
        normal = rng.normal(size=(20_000, 9)).astype(np.float32)
        scored = rng.normal(size=(4096, 9)).astype(np.float32)
        described = "Gaussian rows (9 features; the ADBench shuttle table is absent)"
    path = work / "tabular-train.npy"
    np.save(path, normal, allow_pickle=False)
    return path, scored, described


def _payloads(X: NDArray[np.float32], kind: str) -> list[bytes]:
    return [
        pb.ScoreRequest(model_name=MODEL_NAME, input=to_tensor(X[i : i + ROWS]),
                        score_kind=kind).SerializeToString()
        for i in range(0, X.shape[0] - ROWS + 1, ROWS)
    ]


def _combined(results: list[LoadResult], cpu: list[dict[str, Any]], kind: str
              ) -> dict[str, Any]:
    requests = sum(r.requests for r in results)
    duration_s = sum(r.duration_s for r in results)
    return {
        "what": f"tabular service, {ROWS}-row Score x{CONCURRENCY}, {kind}",
        "score_kind": kind,
        "rows_per_request": ROWS,
        "concurrency": CONCURRENCY,
        "duration_s": duration_s,
        "requests": requests,
        "rows_per_s": requests * ROWS / duration_s,
        "latency_p50_ms": float(np.median([r.latency_p50_ms for r in results])),
        "latency_p99_ms": max(r.latency_p99_ms for r in results),
        "rounds_rows_per_s": [r.rows_per_s for r in results],
        "cpu": {key: float(np.mean([c[key] for c in cpu]))
                for key in ("busy_cores", "benchmark_cores", "other_cores")},
    }


def measure_tabular(work: Path, threads: int, warmup_s: float, duration_s: float, quick: bool,
                    run_cli: Callable[..., None]) -> dict[str, Any]:
    """Trains, exports and serves the tabular VAE; the default kind against GRAPH_KIND."""
    train_path, X, described = _table(work)
    run_dir, repo = work / "tabular-run", work / "tabular-repo"
    logger.info("training the tabular VAE on %s", described)
    run_cli("train", "--data", str(train_path), "--model", "vae", "--epochs", "1",
            "--max-rows", "10000" if quick else "40000", "--out", str(run_dir))
    run_cli("export", str(run_dir), "--repo", str(repo), "--name", MODEL_NAME)
    server, target, _ = start_latentwatch(repo, work / "tabular-server.log", threads)
    with server:
        with LatentwatchClient(target) as client:
            info = client.get_model(MODEL_NAME)
            manifest = Manifest.model_validate_json(info.manifest_json)
            default = info.default_score_kind
            for kind in (default, GRAPH_KIND):
                assert client.score(MODEL_NAME, X[:ROWS], score_kind=kind).score_kind == kind
        payloads = {kind: _payloads(X, kind) for kind in (default, GRAPH_KIND)}
        results: dict[str, list[LoadResult]] = {default: [], GRAPH_KIND: []}
        cpu: dict[str, list[dict[str, Any]]] = {default: [], GRAPH_KIND: []}
        for round_index in range(ROUNDS):
            for kind in (GRAPH_KIND, default) if round_index % 2 == 0 else (default, GRAPH_KIND):
                logger.info("measuring tabular %s, round %d", kind, round_index + 1)
                with CpuWatch({"server": server.pid}) as watch:
                    results[kind].append(run_load(
                        target, payloads[kind], rows_per_request=ROWS, concurrency=CONCURRENCY,
                        warmup_s=warmup_s, duration_s=duration_s / ROUNDS,
                    ))
                cpu[kind].append(watch.figures)
        server.check_alive()
    stage = manifest.scoring.second_stage if manifest.scoring is not None else None
    return {
        "data": described,
        "n_features": int(X.shape[1]),
        "default_score_kind": default,
        "second_stage": None if stage is None else {
            "statistics": list(stage.statistics), "k": stage.k,
            "n_reference_rows": stage.n_reference_rows,
        },
        "default": _combined(results[default], cpu[default], default),
        "graph_only": _combined(results[GRAPH_KIND], cpu[GRAPH_KIND], GRAPH_KIND),
    }
