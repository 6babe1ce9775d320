"""Throughput of the scoring service against raw ONNX Runtime, the gRPC floor and PyOD; its
scale curves, memory against loaded versions and the tabular second stage's cost.

    python benchmarks/throughput.py --json benchmarks/results/throughput.json [--quick]
        [--score-kind KIND] [--duration-s S] [--threads N] [--default-repo DIR]
        [--n-importance-samples K] [--max-in-flight-rows N] [--plot-dir DIR]

One run on one machine, for a 784-512-256-32 MLP VAE on Fashion-MNIST rows (random [0, 1] rows
when ../shared/data/fashion-mnist is absent), trained for one epoch on 20,000 rows (only its
speed is measured) and exported to a temporary repository:

  (a) ONNX Runtime `run` in this process on the same scorer.onnx, 256-row batches
  (b) the service end to end, 256-row Score requests from 4 concurrent callers
  (c) the service, 1-row Score requests from 64 concurrent callers
  (d) a no-op gRPC server answering (c)'s calls with a canned response of the real size
  (e) PyOD's VAE decision_function in this process, same data, layer sizes and batch size
  (f) the server's peak resident memory during (b) and (c), and the time from `latentwatch
      serve` starting to health SERVING on the default repository
  (g), (h) a tabular VAE on an ADBench table: the default kind (graph + kNN second stage)
      against the graph-only neg_elbo, 256-row requests x4 (tabular_stage.py)
  scale curves: rows/s and p99 over rows per request x callers (scale_curves.py), and the
      server's RSS with 1, 10 and 50 loaded versions (version_memory.py), both plotted as PNG

Clients run in this process (asyncio), every server in its own process. Each measurement runs
for a fixed duration after a warm-up. Prints a Markdown table and writes every figure to the
JSON file; with --quick everything is smaller and shorter (a check that it all runs).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import throughput_report as report_of
from grpc_load import PeakRss, call_once, run_load
from in_process import pyod_vae, raw_ort
from numpy.typing import NDArray
from processes import CpuWatch, start_latentwatch, start_noop
from scale_curves import best_points, grid, sweep
from scale_plots import MEMORY_PNG, SCALE_PNG, plot_memory, plot_scale
from tabular_stage import measure_tabular
from version_memory import VERSION_COUNTS, measure_version_memory

from latentwatch.client.client import LatentwatchClient
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.repository.manifest import Manifest
from latentwatch.wire.tensors import to_tensor

logger = logging.getLogger("throughput")

REPO_ROOT = Path(__file__).resolve().parents[1]
FASHION_MNIST = REPO_ROOT / ".." / "shared" / "data" / "fashion-mnist"
MODEL_NAME = "fmnist-vae"
HIDDEN = (512, 256)
LATENT_DIM = 32
N_FEATURES = 784
BATCH_ROWS = 256
QUICK_VERSION_COUNTS = (1, 3)
MB = 1024 * 1024


def _latentwatch(*args: str) -> None:
    """Runs the CLI in a child process, so torch stays out of this one until (e)."""
    argv = [sys.executable, "-m", "latentwatch", "--log-level", "WARNING", *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed:\n{done.stdout}\n{done.stderr}")


def _data(work: Path, quick: bool) -> tuple[str, NDArray[np.float32], str]:
    """(training source, rows to score, description): Fashion-MNIST, else random rows."""
    train_rows = 3_000 if quick else 20_000
    if (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        from latentwatch.data import load_source

        test = load_source(str(FASHION_MNIST / "t10k-images-idx3-ubyte.gz"), max_rows=4096)
        return str(FASHION_MNIST / "train-images-idx3-ubyte.gz"), test.X, "fashion-mnist"
    rng = np.random.default_rng(0)
    path = work / "random-rows.npy"
    np.save(path, rng.random((train_rows, N_FEATURES), dtype=np.float32))
    return str(path), rng.random((4096, N_FEATURES), dtype=np.float32), "random [0, 1] rows"


def _train_and_export(work: Path, source: str, quick: bool, n_samples: int | None) -> Path:
    """The exported version's directory."""
    repo, run_dir = work / "repo", work / "run"
    max_rows = "3000" if quick else "20000"
    samples = [] if n_samples is None else ["--n-importance-samples", str(n_samples)]
    _latentwatch(
        "train", "--data", source, "--model", "vae", "--body", "mlp", "--decoder", "bernoulli",
        "--hidden", ",".join(map(str, HIDDEN)), "--latent-dim", str(LATENT_DIM),
        "--epochs", "1", "--max-rows", max_rows, "--out", str(run_dir), *samples,
    )
    _latentwatch("export", str(run_dir), "--repo", str(repo), "--name", MODEL_NAME)
    return next(p for p in (repo / MODEL_NAME).iterdir() if p.is_dir())


def _requests(X: NDArray[np.float32], rows: int, count: int, score_kind: str) -> list[bytes]:
    payloads = []
    for i in range(count):
        start = (i * rows) % (X.shape[0] - rows + 1)
        request = pb.ScoreRequest(
            model_name=MODEL_NAME, input=to_tensor(X[start : start + rows]),
            score_kind=score_kind,
        )
        payloads.append(request.SerializeToString())
    return payloads


def _service(
    version_dir: Path, X: NDArray[np.float32], work: Path, score_kind: str, threads: int,
    warmup_s: float, duration_s: float, pyod: Callable[[], dict],
) -> dict[str, Any]:
    """(a) to (e) and the server's peak RSS, in an order that puts the compared pairs a-b, b-e
    and c-d next to each other in time (a shared machine's load drifts)."""
    repo = version_dir.parents[1]
    server, target, ready_s = start_latentwatch(repo, work / "server.log", threads)
    with server:
        with LatentwatchClient(target) as client:
            info = client.get_model(MODEL_NAME)
            manifest = Manifest.model_validate_json(info.manifest_json)
            score_kind = score_kind or info.default_score_kind
            check = client.score(MODEL_NAME, X[:BATCH_ROWS], score_kind=score_kind)
            assert len(check) == BATCH_ROWS and check.score_kind == score_kind
        batch_payloads = _requests(X, BATCH_ROWS, 16, score_kind)
        row_payloads = _requests(X, 1, 256, score_kind)
        canned = call_once(target, row_payloads[0])
        assert len(pb.ScoreResponse.FromString(canned).score) == 1
        # The idle server costs (a) and (e) nothing: no calls, no polling.
        cpu: dict[str, CpuWatch] = {}
        logger.info("measuring (a): onnxruntime in process")
        with CpuWatch({"server": server.pid}) as cpu["a"]:
            raw = raw_ort(version_dir, X, BATCH_ROWS, threads, warmup_s, duration_s)
        with PeakRss(server.pid) as rss:
            logger.info("measuring (b): 256-row requests x4")
            with CpuWatch({"server": server.pid}) as cpu["b"]:
                batched = run_load(target, batch_payloads, rows_per_request=BATCH_ROWS,
                                   concurrency=4, warmup_s=warmup_s, duration_s=duration_s)
            with CpuWatch({"server": server.pid}) as cpu["e"]:
                pyod_result = pyod()
            logger.info("measuring (c): 1-row requests x64")
            with CpuWatch({"server": server.pid}) as cpu["c"]:
                single = run_load(target, row_payloads, rows_per_request=1, concurrency=64,
                                  warmup_s=warmup_s, duration_s=duration_s)
        server.check_alive()
    response_path = work / "canned-response.bin"
    response_path.write_bytes(canned)
    logger.info("measuring (d): no-op gRPC floor x64")
    noop, noop_target = start_noop(response_path, work / "noop.log")
    with noop:
        call_once(noop_target, row_payloads[0])  # waits until it listens
        with CpuWatch({"server": noop.pid}) as cpu["d"]:
            floor = run_load(noop_target, row_payloads, rows_per_request=1, concurrency=64,
                             warmup_s=warmup_s, duration_s=duration_s)
    stage = manifest.scoring.second_stage if manifest.scoring is not None else None
    return {
        "model": {"default_score_kind": info.default_score_kind, "score_kind": score_kind,
                  "execution_provider": info.execution_provider,
                  "calibration_size": info.calibration_size,
                  "n_importance_samples": manifest.require_latent().n_importance_samples,
                  "second_stage_statistics": None if stage is None else list(stage.statistics)},
        "a": {**raw, "cpu": cpu["a"].figures},
        "b": {"what": f"service, 256-row Score x4, {score_kind}", **batched.as_dict(),
              "cpu": cpu["b"].figures},
        "c": {"what": f"service, 1-row Score x64, {score_kind}", **single.as_dict(),
              "cpu": cpu["c"].figures},
        "d": {"what": "no-op grpc.aio Score x64, same payloads", **floor.as_dict(),
              "request_bytes": len(row_payloads[0]), "response_bytes": len(canned),
              "cpu": cpu["d"].figures},
        "e": {**pyod_result, "cpu": cpu["e"].figures},
        "server_peak_rss_mb": rss.peak_bytes / MB,
        "server_ready_s": ready_s,
    }


def _startup(repo: Path | None, work: Path, threads: int) -> dict[str, Any]:
    """(f) seconds from `latentwatch serve` starting to SERVING on the default repository;
    skipped without a repository (--quick, which trains no default model)."""
    if repo is None:
        return {"ready_s": None, "rss_at_ready_mb": None,
                "skipped": "--quick without --default-repo trains no default model"}
    bootstrap_start_s = time.perf_counter()
    _latentwatch("bootstrap", "--repo", str(repo))  # trains only when the repo is empty
    logger.info("default repository ready in %.0f s", time.perf_counter() - bootstrap_start_s)
    server, _, ready_s = start_latentwatch(repo, work / "default-server.log", threads)
    with server:
        rss_mb = psutil.Process(server.pid).memory_info().rss / MB
    return {"ready_s": ready_s, "rss_at_ready_mb": rss_mb, "skipped": None}


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, type=Path, help="file to write the figures to")
    parser.add_argument("--score-kind", default="",
                        help="score kind the requests ask for (default: the model's default)")
    parser.add_argument("--duration-s", type=float, default=None,
                        help="seconds per measurement (default 10, or 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="less training, shorter runs, a smaller grid, 1 and 3 versions "
                        "(default: off)")
    parser.add_argument("--default-repo", type=Path, default=None,
                        help="default-model repository for (f), bootstrapped when empty and "
                        "kept (default: a temporary one, trained afresh; none with --quick)")
    parser.add_argument("--n-importance-samples", type=int, default=None,
                        help="fixed noise draws per row in the scorer (default: training's)")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime / torch threads everywhere (default 0: usable CPUs)")
    parser.add_argument("--max-in-flight-rows", type=int, default=None,
                        help="scale points with more rows x callers are left out (default "
                        "4096, 512 with --quick; 16384 adds 4096 x 4 at minutes per point)")
    parser.add_argument("--plot-dir", type=Path, default=None,
                        help="folder for the PNG plots (default: the JSON file's folder)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from latentwatch.service.runtime import usable_cpu_count

    threads = args.threads or usable_cpu_count()
    duration_s = args.duration_s or (1.0 if args.quick else 10.0)
    warmup_s = 0.5 if args.quick else 2.0
    point_s, point_warmup_s = (0.5, 0.3) if args.quick else (1.5, 1.0)  # a scale point's least
    plot_dir = args.plot_dir or args.json.parent
    started_s = time.perf_counter()
    load_before = report_of.machine(threads)["loadavg"]
    with tempfile.TemporaryDirectory(prefix="latentwatch-bench-") as tmp:
        work = Path(tmp)
        source, X, data_name = _data(work, args.quick)
        logger.info("training and exporting %s on %s", MODEL_NAME, data_name)
        version_dir = _train_and_export(work, source, args.quick, args.n_importance_samples)
        default_repo = args.default_repo or (None if args.quick else work / "default-repo")
        logger.info("measuring (f): start to SERVING on the default repository")
        startup = _startup(default_repo, work, threads)
        logger.info("fitting pyod's VAE for (e)")
        pyod = pyod_vae(source, X, HIDDEN, LATENT_DIM, BATCH_ROWS, threads, args.quick,
                        warmup_s, duration_s)
        service = _service(
            version_dir, X, work, args.score_kind, threads, warmup_s, duration_s, pyod
        )
        score_kind = service["model"]["score_kind"]
        scale = sweep(version_dir.parents[1], MODEL_NAME, X, work, threads, score_kind,
                      grid(args.quick, args.max_in_flight_rows), point_s, point_warmup_s,
                      service["b"]["rows_per_s"])
        scale["summary"] = best_points(scale)
        memory = measure_version_memory(
            version_dir, X, work, threads, QUICK_VERSION_COUNTS if args.quick else VERSION_COUNTS
        )
        tabular = measure_tabular(work, threads, warmup_s, duration_s, args.quick,
                                  _latentwatch)
    measurements = {
        **{key: service[key] for key in "abcde"},
        "f": {"server_peak_rss_mb": service["server_peak_rss_mb"],
              "fmnist_server_ready_s": service["server_ready_s"],
              "default_repo_ready_s": startup["ready_s"],
              "default_repo_rss_at_ready_mb": startup["rss_at_ready_mb"],
              "default_repo_skipped": startup["skipped"]},
        "g": tabular["default"],
        "h": tabular["graph_only"],
        "versions_memory": memory,
    }
    title = (f"{MODEL_NAME} ({N_FEATURES}-{'-'.join(map(str, HIDDEN))}-{LATENT_DIM}), "
             f"{score_kind}, {threads} ORT threads")
    plots = {
        "scale": str(plot_scale(scale, title, plot_dir / SCALE_PNG)),
        "versions_memory": str(plot_memory(memory, title, plot_dir / MEMORY_PNG)),
    }
    report = {
        "data": data_name,
        "model": {"name": MODEL_NAME, "hidden": HIDDEN, "latent_dim": LATENT_DIM,
                  **service["model"]},
        "tabular": {k: v for k, v in tabular.items() if k not in ("default", "graph_only")},
        "quick": args.quick,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "client": "grpc.aio in the benchmark process, pre-serialized requests, raw responses",
        "measurements": measurements,
        "ratios": report_of.ratios(measurements),
        "targets": report_of.targets(),
        # The service cannot score single rows faster than ONNX Runtime scores them in bulk, so
        # c/d can reach at most a/d on this machine whatever the transport does.
        "ceilings": {"single_row_vs_grpc_floor": report_of.ratio(measurements["a"],
                                                                 measurements["d"])},
        "scale": scale,
        "plots": plots,
        "notes": [
            f"latentwatch's scores are deterministic: {service['model']['n_importance_samples']}"
            " fixed noise draws per row; PyOD's VAE decision_function decodes one random draw "
            "per row, so its scores change from call to call",
            "(a) and (e) are one caller in this process; (b)-(d), (g), (h) and the scale "
            "points are closed-loop callers",
            f"scale points: their server runs with max_queue_rows = "
            f"{scale['server_max_queue_rows']} (set explicitly: twice the most rows in flight; "
            "4 callers x 4096 rows would need 32768, and the default 8192 refuses them with "
            f"RESOURCE_EXHAUSTED) and max_concurrent_rpcs = {scale['server_max_concurrent_rpcs']}"
            f"; points with more than {scale['max_in_flight_rows']} rows in flight left out",
            "cpu: cores busy on the whole machine during each measurement, ours (client and "
            "server) and other work's (a shared machine)",
        ],
        "machine": {**report_of.machine(threads), "loadavg_before": load_before},
        "total_s": time.perf_counter() - started_s,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(report_of.table(report))
    print(f"wrote {args.json} ({report['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
