"""The tabular second stage's cost: default-kind rows/s against graph-only rows/s.

    python benchmarks/knn_stage.py --json benchmarks/results/knn_stage.json
        [--datasets 32_shuttle,10_cover,30_satellite,25_musk] [--work DIR] [--duration-s S]
        [--threads N] [--epochs E]

Per ADBench set: a tabular VAE (the product's default shape for the set) is trained on the
clean-train pool of seed 0 and exported, as benchmarks/quality.py does; the version is then loaded
in this process by the service's own loader (load_repository) and scored with ScoringCore.score,
256-row requests from one caller in turn, so every request goes through validation, the micro-
batcher, ONNX Runtime in the executor, the scoring pipeline and the p-values, but no gRPC:

  graph    score_kind = neg_elbo (a scorer output: no second stage)
  default  score_kind = the default (stats_density: neg_elbo and the input kNN distance)

The two alternate in short rounds so a shared machine's drifting load hits both alike; the
ratio default/graph is the figure (target >= 0.5: the second stage costs at most the graph).
A --work directory keeps the trained versions for later runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from quality_split import clean_train_split, load_tabular

logger = logging.getLogger("knn_stage")

REPO_ROOT = Path(__file__).resolve().parents[1]
ADBENCH = REPO_ROOT / ".." / "shared" / "data" / "adbench"
DATASETS = ("32_shuttle", "10_cover", "30_satellite", "25_musk")
BATCH_ROWS = 256
MAX_TRAIN_ROWS = 20_000
GRAPH_KIND = "neg_elbo"
TARGET = 0.5


def _prepare(name: str, work: Path, epochs: int) -> tuple[Path, NDArray[np.float32]]:
    """(repository, test rows) of `name`: trained and exported once per work directory."""
    repo = work / "repo"
    test_path = work / f"{name}-test.npy"
    if (repo / name).is_dir() and test_path.is_file():
        return repo, np.load(test_path, allow_pickle=False)
    from latentwatch.export.exporter import export_run
    from latentwatch.models.training import TrainConfig, run_training

    X, y = load_tabular(ADBENCH / f"{name}.npz")
    split = clean_train_split(X, y, 0, MAX_TRAIN_ROWS, 4 * 4096)
    pool = work / f"{name}-pool.npy"
    np.save(pool, split.pool, allow_pickle=False)
    logger.info("%s: training on %d rows", name, split.pool.shape[0])
    config = TrainConfig(data=str(pool), model="vae", out=work / f"run-{name}", seed=0,
                         epochs=epochs, progress=False)
    run_training(config)
    export_run(work / f"run-{name}", repo, name)
    np.save(test_path, split.test, allow_pickle=False)
    return repo, split.test


async def _measure(repo: Path, names: list[str], tests: dict[str, NDArray[np.float32]],
                   threads: int, duration_s: float) -> dict[str, Any]:
    from latentwatch.repository.layout import find_versions
    from latentwatch.service.core import ScoringCore
    from latentwatch.service.loader import load_repository
    from latentwatch.service.metrics import ServiceMetrics
    from latentwatch.service.settings import Settings

    settings = Settings(repo=repo, intra_op_threads=threads)
    core = ScoringCore(settings)
    repository = await load_repository(repo, find_versions(repo), settings, ServiceMetrics())
    core.set_repository(repository)
    results: dict[str, Any] = {}
    try:
        for name in names:
            results[name] = await _measure_set(core, name, tests[name], duration_s)
    finally:
        await repository.close()
    return results


async def _measure_set(core: Any, name: str, X: NDArray[np.float32],
                       duration_s: float) -> dict[str, Any]:
    info = core.get_model(name)
    default = info.default_score_kind
    batches = [X[i : i + BATCH_ROWS] for i in range(0, X.shape[0] - BATCH_ROWS + 1, BATCH_ROWS)]
    times: dict[str, list[float]] = {GRAPH_KIND: [], default: []}
    for kind in times:  # warm-up
        for batch in batches[:8]:
            await core.score(name, "", batch, score_kind=kind)
    rounds = 20
    for r in range(rounds):
        for kind in (times if r % 2 == 0 else reversed(list(times))):
            end_s = time.perf_counter() + duration_s / (2 * rounds)
            i = 0
            while (start_s := time.perf_counter()) < end_s:
                await core.score(name, "", batches[i % len(batches)], score_kind=kind)
                times[kind].append(time.perf_counter() - start_s)
                i += 1
    manifest = core.get_model(name)
    stage = _stage_description(manifest)
    out: dict[str, Any] = {"n_features": int(X.shape[1]), "default_kind": default, **stage}
    for label, kind in (("graph", GRAPH_KIND), ("default", default)):
        t = np.asarray(times[kind])
        out[label] = {"score_kind": kind, "requests": int(t.size),
                      "rows_per_s": BATCH_ROWS * t.size / float(t.sum()),
                      "latency_p50_ms": float(np.percentile(t, 50) * 1e3),
                      "latency_p99_ms": float(np.percentile(t, 99) * 1e3)}
    out["default_vs_graph"] = out["default"]["rows_per_s"] / out["graph"]["rows_per_s"]
    out["stage_ms_per_request"] = (out["default"]["latency_p50_ms"]
                                   - out["graph"]["latency_p50_ms"])
    logger.info("%s: graph %.0f rows/s, default %.0f rows/s, ratio %.2f", name,
                out["graph"]["rows_per_s"], out["default"]["rows_per_s"], out["default_vs_graph"])
    return out


def _stage_description(info: Any) -> dict[str, Any]:
    from latentwatch.repository.manifest import Manifest

    spec = Manifest.model_validate_json(info.manifest_json).require_scoring().second_stage
    return {"statistics": spec.statistics, "k": spec.k, "n_reference_rows": spec.n_reference_rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where the figures go")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help=f"ADBench sets (default {','.join(DATASETS)})")
    parser.add_argument("--work", type=Path, default=None,
                        help="keeps trained versions between runs (default: a temporary dir)")
    parser.add_argument("--duration-s", type=float, default=10.0,
                        help="seconds of requests per set, both kinds together (default 10)")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime intra-op threads (default 0: usable CPUs)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        tests = {}
        for name in names:
            repo, tests[name] = _prepare(name, work, args.epochs)
        results = asyncio.run(_measure(work / "repo", names, tests, args.threads,
                                       args.duration_s))
    report = {
        "what": "default-kind vs graph-only rows/s, 256-row ScoringCore.score requests in "
                "process (service loader, batcher, ONNX Runtime executor, pipeline; no gRPC)",
        "target_default_vs_graph": TARGET,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "threads": args.threads, "duration_s": args.duration_s, "sets": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    for name, r in results.items():
        print(f"{name:14s} F={r['n_features']:4d} R={r['n_reference_rows']:5d}  graph "
              f"{r['graph']['rows_per_s']:9.0f} rows/s  default {r['default']['rows_per_s']:9.0f}"
              f" rows/s  ratio {r['default_vs_graph']:.2f} (target >= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
