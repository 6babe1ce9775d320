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
  before   the default kind with the kNN search this index replaced (legacy_knn_distance below:
           a float32 (B, R) distance matrix and np.partition of every row)

The three alternate in short rounds so a shared machine's drifting load hits them alike; the
ratio default/graph is the figure (target >= 0.5: the second stage costs at most the graph).
Agreement: every test row scored offline (OfflineScorer) with the index and with the replaced
search, same version and calibration: the largest differences of the kNN distance, the default
score and its conformal p-value. A --work directory keeps the trained versions for later runs.
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
from dataclasses import dataclass
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
LEGACY_CHUNK_ROWS = 512


def legacy_knn_distance(reference: NDArray[np.float32], queries: NDArray,
                        k: int) -> NDArray[np.float64]:
    """The kNN search the index replaced, kept as this benchmark's baseline: float32 squared
    distances |y|^2 - 2x.y + |x|^2 for 512 rows at a time, np.partition of every row."""
    reference = np.asarray(reference, dtype=np.float32)
    ref_sq = np.einsum("ij,ij->i", reference, reference)
    out = np.empty(queries.shape[0], dtype=np.float64)
    for start in range(0, queries.shape[0], LEGACY_CHUNK_ROWS):
        q = np.asarray(queries[start : start + LEGACY_CHUNK_ROWS], dtype=np.float32)
        d2 = ref_sq[None, :] - 2.0 * (q @ reference.T)
        d2 += np.einsum("ij,ij->i", q, q)[:, None]
        nearest = np.maximum(np.partition(d2, k - 1, axis=1)[:, :k], 0.0)
        out[start : start + len(q)] = np.sqrt(nearest).mean(axis=1)
    return out


@dataclass(frozen=True)
class LegacySearch:
    """Stands in for a second stage's KnnIndex: the replaced search over the same rows."""

    reference: NDArray[np.float32]

    def mean_distance(self, queries: NDArray, k: int,
                      exclude_self: bool = False) -> NDArray[np.float64]:
        assert not exclude_self  # scoring only
        return legacy_knn_distance(self.reference, queries, k)


def use_legacy_search(stage: Any) -> Any:
    """Swaps `stage`'s input kNN index for the replaced search; returns the index."""
    index = stage.input_index
    object.__setattr__(stage, "input_index", LegacySearch(stage.input_reference))
    return index


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
            stage = repository.versions[name]["1"].pipeline.second_stage
            results[name] = await _measure_set(core, stage, name, tests[name], duration_s)
            results[name]["agreement"] = _agreement(repo / name / "1", tests[name], threads)
    finally:
        await repository.close()
    return results


async def _measure_set(core: Any, stage: Any, name: str, X: NDArray[np.float32],
                       duration_s: float) -> dict[str, Any]:
    """Rows/s of 256-row requests: graph kind, default kind, default kind with the replaced
    search ("before"), in alternating rounds."""
    default = core.get_model(name).default_score_kind
    batches = [X[i : i + BATCH_ROWS] for i in range(0, X.shape[0] - BATCH_ROWS + 1, BATCH_ROWS)]
    modes = {"graph": GRAPH_KIND, "default": default, "before": default}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    index = stage.input_index
    rounds = 20
    for r in range(-1, rounds):  # round -1: warm-up, not timed
        for mode in (list(modes) if r % 2 == 0 else list(reversed(modes))):
            if mode == "before":
                use_legacy_search(stage)
            end_s = time.perf_counter() + duration_s / (len(modes) * rounds)
            i = 0
            while (start_s := time.perf_counter()) < end_s:
                await core.score(name, "", batches[i % len(batches)], score_kind=modes[mode])
                if r >= 0:
                    times[mode].append(time.perf_counter() - start_s)
                i += 1
            object.__setattr__(stage, "input_index", index)
    out: dict[str, Any] = {"n_features": int(X.shape[1]), "default_kind": default,
                           **_stage_description(core.get_model(name))}
    for mode, kind in modes.items():
        t = np.asarray(times[mode])
        out[mode] = {"score_kind": kind, "requests": int(t.size),
                     "rows_per_s": BATCH_ROWS * t.size / float(t.sum()),
                     "latency_p50_ms": float(np.percentile(t, 50) * 1e3),
                     "latency_p99_ms": float(np.percentile(t, 99) * 1e3)}
    graph = out["graph"]["rows_per_s"]
    out["default_vs_graph"] = out["default"]["rows_per_s"] / graph
    out["before_vs_graph"] = out["before"]["rows_per_s"] / graph
    logger.info("%s: graph %.0f rows/s, default %.0f rows/s (ratio %.2f), before %.0f (%.2f)",
                name, graph, out["default"]["rows_per_s"], out["default_vs_graph"],
                out["before"]["rows_per_s"], out["before_vs_graph"])
    return out


def _agreement(version_dir: Path, X: NDArray[np.float32], threads: int) -> dict[str, Any]:
    """Every test row scored offline with the index and with the replaced search: the largest
    differences of the kNN distance, the default kind's score and its p-value."""
    from latentwatch.service.offline import OfflineScorer

    scorer = OfflineScorer.from_version_dir(version_dir, intra_op_threads=threads)
    pipeline = scorer.pipeline
    kind = pipeline.default_kind
    stage = pipeline.second_stage
    assert stage is not None and pipeline.preprocessing is not None
    rows = pipeline.preprocessing.apply(X)
    new_d = stage.input_index.mean_distance(rows, stage.k)
    new = scorer.score(X)[kind]
    use_legacy_search(stage)
    old_d = legacy_knn_distance(stage.input_reference, rows, stage.k)
    old = scorer.score(X)[kind]
    new_p, old_p = pipeline.p_values(kind, new), pipeline.p_values(kind, old)
    moved = np.abs(new_p - old_p) > 0
    return {
        "rows": int(X.shape[0]),
        "max_abs_distance_diff": float(np.abs(new_d - old_d).max()),
        "max_rel_distance_diff": float((np.abs(new_d - old_d) / np.maximum(new_d, 1e-12)).max()),
        "max_abs_score_diff": float(np.abs(new - old).max()),
        "max_abs_p_value_diff": float(np.abs(new_p - old_p).max()),
        "rows_with_other_p_value": int(moved.sum()),
        "p_value_step": 1.0 / (pipeline.calibration[kind].size + 1),
    }


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
                "process (service loader, batcher, ONNX Runtime executor, pipeline; no gRPC); "
                "before: the default kind with the replaced kNN search",
        "target_default_vs_graph": TARGET,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "threads": args.threads, "duration_s": args.duration_s, "sets": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'set':14s} {'F':>4s} {'R':>5s} {'graph':>8s} {'default':>8s} {'ratio':>6s} "
          f"{'before':>8s} {'ratio':>6s}  max |d score| max |d p|  (rows/s; target >= {TARGET})")
    for name, r in results.items():
        a = r["agreement"]
        print(f"{name:14s} {r['n_features']:4d} {r['n_reference_rows']:5d} "
              f"{r['graph']['rows_per_s']:8.0f} {r['default']['rows_per_s']:8.0f} "
              f"{r['default_vs_graph']:6.2f} {r['before']['rows_per_s']:8.0f} "
              f"{r['before_vs_graph']:6.2f}  {a['max_abs_score_diff']:.1e}       "
              f"{a['max_abs_p_value_diff']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
