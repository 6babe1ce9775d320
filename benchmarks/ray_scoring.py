"""Rows/s of batch scoring on Ray Data (1 and 2 workers) against the single-process offline scorer.

    python benchmarks/ray_scoring.py --json benchmarks/results/ray_scoring.json
    python benchmarks/ray_scoring.py --repo model_repository --model digits-vae --rows 200000

Scores the same rows (scikit-learn's digits, tiled to --rows) three ways, one run each, every
scorer with one ONNX Runtime thread: OfflineScorer in this process, then score_dataset on a
local Ray cluster (ray.init(num_cpus=2)) with 1 and with 2 workers. A Ray figure is the wall time
from the call to the last scored row, actor start-up (loading the version) included; Ray's own
start-up is reported apart. Without --repo a digits VAE is trained and exported (8 epochs) into a
temporary directory first.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("ray_scoring")


def train_digits_vae(root: Path) -> Path:
    from latentwatch.cli.main import main

    repo, run_dir = root / "repo", root / "run"
    args = ["train", "--data", "digits", "--model", "vae", "--out", str(run_dir)]
    assert main([*args, "--epochs", "8", "--seed", "0"]) == 0
    assert main(["export", str(run_dir), "--repo", str(repo), "--name", "digits-vae"]) == 0
    return repo


def measure(repo: Path, model: str, n_rows: int, block_rows: int) -> dict[str, Any]:
    import ray

    from latentwatch.batch.ray_scoring import score_dataset
    from latentwatch.data.sources import load_source
    from latentwatch.export.recalibrate import source_version
    from latentwatch.service.offline import OfflineScorer

    digits = load_source("digits").X
    x = np.resize(digits, (n_rows, digits.shape[1])).astype(np.float32)  # (N, 64), tiled
    results: dict[str, Any] = {"rows": n_rows, "block_rows": block_rows, "model": model}

    start = time.perf_counter()
    scorer = OfflineScorer.from_version_dir(source_version(repo, model), intra_op_threads=1)
    loaded = time.perf_counter()
    expected = scorer.score(x)[scorer.default_score_kind]
    done = time.perf_counter()
    results["offline_single_process"] = {
        "load_s": loaded - start, "score_s": done - loaded, "rows_per_s": n_rows / (done - loaded),
    }
    logger.info("offline: %.0f rows/s", n_rows / (done - loaded))

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results["ray_init_s"] = time.perf_counter() - start
    try:
        blocks = [x[i : i + block_rows] for i in range(0, n_rows, block_rows)]
        for workers in (1, 2):
            ds = ray.data.from_numpy(blocks)  # a tensor column `data`, in the object store
            start = time.perf_counter()
            scored = score_dataset(ds, repo, model, features="data", workers=workers,
                                   batch_rows=block_rows).select_columns(["score"])
            got = np.concatenate([b["score"] for b in scored.iter_batches(
                batch_format="numpy", batch_size=None)])
            wall = time.perf_counter() - start
            assert got.shape == expected.shape
            assert np.array_equal(np.sort(got), np.sort(expected))
            results[f"ray_{workers}_workers"] = {"wall_s": wall, "rows_per_s": n_rows / wall}
            logger.info("ray, %d workers: %.0f rows/s", workers, n_rows / wall)
    finally:
        ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="a model repository (default: train one)")
    parser.add_argument("--model", default="digits-vae")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--block-rows", type=int, default=4096)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo or train_digits_vae(Path(tmp))
        results = measure(repo, args.model, args.rows, args.block_rows)
    offline = results["offline_single_process"]["rows_per_s"]
    print(f"{'scorer':<28}{'rows/s':>12}{'vs offline':>12}")
    print(f"{'offline, one process':<28}{offline:>12,.0f}{1.0:>12.2f}")
    for workers in (1, 2):
        rate = results[f"ray_{workers}_workers"]["rows_per_s"]
        print(f"{f'ray data, {workers} worker(s)':<28}{rate:>12,.0f}{rate / offline:>12.2f}")
    print(f"ray.init: {results['ray_init_s']:.1f} s (not in the figures)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
