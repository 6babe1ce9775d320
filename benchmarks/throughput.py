"""Throughput of the scoring service against raw ONNX Runtime, the gRPC floor and PyOD.

    python benchmarks/throughput.py --json throughput.json [--score-kind KIND]
        [--duration-s S] [--quick] [--threads N] [--default-repo DIR]
        [--n-importance-samples K]

One run on one machine, for a 784-512-256-32 MLP VAE on Fashion-MNIST rows (random [0, 1] rows
when ../shared/data/fashion-mnist is absent), trained for one epoch and exported to a temporary
repository:

  (a) ONNX Runtime `run` in this process on the same scorer.onnx, 256-row batches
  (b) the service end to end, 256-row Score requests from 4 concurrent callers
  (c) the service, 1-row Score requests from 64 concurrent callers
  (d) a no-op gRPC server answering (c)'s calls with a canned response of the real size
  (e) PyOD's VAE decision_function in this process, same data, layer sizes and batch size
  (f) the server's peak resident memory during (b) and (c), and the time from `latentwatch
      serve` starting to health SERVING on the default repository

Clients run in this process (asyncio), every server in its own process. Each measurement runs
for a fixed duration after a warm-up. Prints a table and writes every figure to the JSON file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from grpc_load import PeakRss, call_once, run_load
from numpy.typing import NDArray
from processes import start_latentwatch, start_noop

from latentwatch.client.client import LatentwatchClient
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.repository.layout import SCORER_FILE
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
TARGETS = {"service_vs_raw_ort": 0.8, "single_row_vs_grpc_floor": 0.8, "service_vs_pyod": 1.5}
MB = 1024 * 1024


def _latentwatch(*args: str) -> None:
    """Runs the CLI in a child process, so torch stays out of this one until (e)."""
    argv = [sys.executable, "-m", "latentwatch", "--log-level", "WARNING", *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed:\n{done.stdout}\n{done.stderr}")


def _data(work: Path, quick: bool) -> tuple[str, NDArray[np.float32], str]:
    """(training source, rows to score, description): Fashion-MNIST, else random rows."""
    train_rows = 10_000 if quick else 60_000
    if (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        from latentwatch.data import load_source

        test = load_source(str(FASHION_MNIST / "t10k-images-idx3-ubyte.gz"), max_rows=4096)
        return str(FASHION_MNIST / "train-images-idx3-ubyte.gz"), test.X, "fashion-mnist"
    rng = np.random.default_rng(0)
    path = work / "random-rows.npy"
    np.save(path, rng.random((train_rows, N_FEATURES), dtype=np.float32))
    return str(path), rng.random((4096, N_FEATURES), dtype=np.float32), "random [0, 1] rows"


def _train_and_export(work: Path, source: str, quick: bool, n_samples: int | None) -> Path:
    repo, run_dir = work / "repo", work / "run"
    max_rows = "10000" if quick else "60000"
    samples = [] if n_samples is None else ["--n-importance-samples", str(n_samples)]
    _latentwatch(
        "train", "--data", source, "--model", "vae", "--body", "mlp", "--decoder", "bernoulli",
        "--hidden", ",".join(map(str, HIDDEN)), "--latent-dim", str(LATENT_DIM),
        "--epochs", "1", "--max-rows", max_rows, "--out", str(run_dir), *samples,
    )
    _latentwatch("export", str(run_dir), "--repo", str(repo), "--name", MODEL_NAME)
    return repo


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


def _timed_loop(fn: Any, warmup_s: float, duration_s: float) -> tuple[int, list[float]]:
    """Calls fn() for warmup_s, then for duration_s; returns (calls, per-call seconds)."""
    end_s = time.perf_counter() + warmup_s
    while time.perf_counter() < end_s:
        fn()
    times_s: list[float] = []
    end_s = time.perf_counter() + duration_s
    while (start_s := time.perf_counter()) < end_s:
        fn()
        times_s.append(time.perf_counter() - start_s)
    return len(times_s), times_s


def _in_process(name: str, calls: int, times_s: list[float]) -> dict:
    lat_ms = np.asarray(times_s) * 1e3
    return {
        "what": name,
        "rows_per_request": BATCH_ROWS,
        "concurrency": 1,
        "duration_s": float(np.sum(times_s)),
        "requests": calls,
        "rows_per_s": calls * BATCH_ROWS / float(np.sum(times_s)),
        "requests_per_s": calls / float(np.sum(times_s)),
        "latency_p50_ms": float(np.percentile(lat_ms, 50)),
        "latency_p99_ms": float(np.percentile(lat_ms, 99)),
        "latency_mean_ms": float(lat_ms.mean()),
    }


def _raw_ort(repo: Path, X: NDArray[np.float32], threads: int, warmup_s: float,
             duration_s: float) -> dict:
    from latentwatch.service.ort_runtime import OrtRuntime

    scorer = next(repo.glob(f"{MODEL_NAME}/*/{SCORER_FILE}"))
    runtime = OrtRuntime.open(scorer, intra_op_threads=threads)
    batches = [X[i : i + BATCH_ROWS] for i in range(0, X.shape[0] - BATCH_ROWS + 1, BATCH_ROWS)]
    state = {"i": 0}

    def run_once() -> None:
        state["i"] += 1
        runtime.run({runtime.input_names[0]: batches[state["i"] % len(batches)]})

    calls, times_s = _timed_loop(run_once, warmup_s, duration_s)
    result = _in_process("onnxruntime run, all scorer outputs", calls, times_s)
    return {**result, "provider": runtime.provider, "intra_op_threads": threads}


def _pyod(source: str, X: NDArray[np.float32], threads: int, quick: bool, warmup_s: float,
          duration_s: float) -> Callable[[], dict]:
    """Fits PyOD's VAE now; returns the measurement (e) to run later."""
    try:
        import torch
        from pyod.models.vae import VAE
    except ImportError as err:
        reason = f"pyod not installed ({err}); pip install -e '.[bench]'"
        return lambda: {"skipped": reason}
    from latentwatch.data import load_source

    torch.set_num_threads(threads)
    # Only its scoring speed is measured, so a small fit suffices.
    train = load_source(source, max_rows=2000 if quick else 5000).X
    detector = VAE(
        encoder_neuron_list=list(HIDDEN), decoder_neuron_list=list(reversed(HIDDEN)),
        latent_dim=LATENT_DIM, epoch_num=1, batch_size=BATCH_ROWS, verbose=0, random_state=0,
    )
    fit_start_s = time.perf_counter()
    detector.fit(train)
    fit_s = time.perf_counter() - fit_start_s
    batches = [X[i : i + BATCH_ROWS] for i in range(0, X.shape[0] - BATCH_ROWS + 1, BATCH_ROWS)]
    state = {"i": 0}

    def score_once() -> None:
        state["i"] += 1
        detector.decision_function(batches[state["i"] % len(batches)], batch_size=BATCH_ROWS)

    def measure() -> dict:
        logger.info("measuring (e): pyod VAE in process")
        calls, times_s = _timed_loop(score_once, warmup_s, duration_s)
        result = _in_process("pyod VAE decision_function", calls, times_s)
        return {**result, "fit_rows": int(train.shape[0]), "fit_s": fit_s,
                "torch_threads": threads}

    return measure


def _service(
    repo: Path, X: NDArray[np.float32], work: Path, score_kind: str, threads: int,
    warmup_s: float, duration_s: float, pyod: Callable[[], dict],
) -> dict[str, Any]:
    """(a) to (e) and the server's peak RSS, in an order that puts the compared pairs a-b, b-e
    and c-d next to each other in time (a shared machine's load drifts)."""
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
        logger.info("measuring (a): onnxruntime in process")
        raw = _raw_ort(repo, X, threads, warmup_s, duration_s)
        with PeakRss(server.pid) as rss:
            logger.info("measuring (b): 256-row requests x4")
            batched = run_load(target, batch_payloads, rows_per_request=BATCH_ROWS,
                               concurrency=4, warmup_s=warmup_s, duration_s=duration_s)
            pyod_result = pyod()
            logger.info("measuring (c): 1-row requests x64")
            single = run_load(target, row_payloads, rows_per_request=1, concurrency=64,
                              warmup_s=warmup_s, duration_s=duration_s)
        server.check_alive()
    response_path = work / "canned-response.bin"
    response_path.write_bytes(canned)
    logger.info("measuring (d): no-op gRPC floor x64")
    noop, noop_target = start_noop(response_path, work / "noop.log")
    with noop:
        call_once(noop_target, row_payloads[0])  # waits until it listens
        floor = run_load(noop_target, row_payloads, rows_per_request=1, concurrency=64,
                         warmup_s=warmup_s, duration_s=duration_s)
    return {
        "model": {"default_score_kind": info.default_score_kind, "score_kind": score_kind,
                  "execution_provider": info.execution_provider,
                  "calibration_size": info.calibration_size,
                  "n_importance_samples": manifest.require_latent().n_importance_samples},
        "a": raw,
        "b": {"what": "service, 256-row Score x4", **batched.as_dict()},
        "c": {"what": "service, 1-row Score x64", **single.as_dict()},
        "d": {"what": "no-op grpc.aio Score x64", **floor.as_dict(),
              "request_bytes": len(row_payloads[0]), "response_bytes": len(canned)},
        "e": pyod_result,
        "server_peak_rss_mb": rss.peak_bytes / MB,
        "server_ready_s": ready_s,
    }


def _startup(repo: Path, work: Path, threads: int) -> dict[str, float]:
    """(f) seconds from `latentwatch serve` starting to SERVING on the default repository."""
    bootstrap_start_s = time.perf_counter()
    _latentwatch("bootstrap", "--repo", str(repo))  # trains only when the repo is empty
    logger.info("default repository ready in %.0f s", time.perf_counter() - bootstrap_start_s)
    server, _, ready_s = start_latentwatch(repo, work / "default-server.log", threads)
    with server:
        rss_mb = psutil.Process(server.pid).memory_info().rss / MB
    return {"ready_s": ready_s, "rss_at_ready_mb": rss_mb, "repo": str(repo)}


def _machine(threads: int) -> dict[str, Any]:
    versions = {}
    for package in ("latentwatch", "onnxruntime-gpu", "grpcio", "numpy", "protobuf", "torch",
                    "pyod"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads": threads,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _ratio(num: dict, den: dict) -> float | None:
    if "rows_per_s" not in num or "rows_per_s" not in den:
        return None
    return num["rows_per_s"] / den["rows_per_s"]


def _table(report: dict[str, Any]) -> str:
    m = report["measurements"]
    lines = [f"{'':4}{'measurement':44}{'rows/s':>10}{'p50 ms':>9}{'p99 ms':>9}"]
    for key in "abcde":
        row = m[key]
        if "rows_per_s" not in row:
            lines.append(f"({key}) skipped: {row.get('skipped')}")
            continue
        lines.append(
            f"({key}) {row['what']:44}{row['rows_per_s']:10.0f}"
            f"{row['latency_p50_ms']:9.2f}{row['latency_p99_ms']:9.2f}"
        )
    for name, value in report["ratios"].items():
        shown = "n/a" if value is None else f"{value:.2f}"
        line = f"ratio {name:28} {shown:>6}  (target >= {TARGETS[name]})"
        if (ceiling := report["ceilings"].get(name)) is not None:
            line += f"  compute ceiling a/d = {ceiling:.2f}"
        lines.append(line)
    f = m["f"]
    lines.append(f"server peak RSS {f['server_peak_rss_mb']:.0f} MB (target < 500 MB); "
                 f"start to SERVING {f['default_repo_ready_s']:.2f} s (target < 5 s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, type=Path, help="file to write the figures to")
    parser.add_argument("--score-kind", default="",
                        help="score kind the requests ask for (default: the model's default)")
    parser.add_argument("--duration-s", type=float, default=None,
                        help="seconds per measurement (default 10, or 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="less training, shorter runs")
    parser.add_argument("--default-repo", type=Path, default=None,
                        help="default-model repository for (f), bootstrapped when empty and "
                        "kept (default: a temporary one, trained afresh)")
    parser.add_argument("--n-importance-samples", type=int, default=None,
                        help="fixed noise draws per row in the scorer (default: training's)")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime / torch threads everywhere (0: usable CPUs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from latentwatch.service.runtime import usable_cpu_count

    threads = args.threads or usable_cpu_count()
    duration_s = args.duration_s or (3.0 if args.quick else 10.0)
    warmup_s = 1.0 if args.quick else 2.0
    started_s = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="latentwatch-bench-") as tmp:
        work = Path(tmp)
        source, X, data_name = _data(work, args.quick)
        logger.info("training and exporting %s on %s", MODEL_NAME, data_name)
        repo = _train_and_export(work, source, args.quick, args.n_importance_samples)
        logger.info("measuring (f): start to SERVING on the default repository")
        startup = _startup(args.default_repo or work / "default-repo", work, threads)
        logger.info("fitting pyod's VAE for (e)")
        pyod = _pyod(source, X, threads, args.quick, warmup_s, duration_s)
        service = _service(
            repo, X, work, args.score_kind, threads, warmup_s, duration_s, pyod
        )
    measurements = {
        **{key: service[key] for key in "abcde"},
        "f": {"server_peak_rss_mb": service["server_peak_rss_mb"],
              "fmnist_server_ready_s": service["server_ready_s"],
              "default_repo_ready_s": startup["ready_s"],
              "default_repo_rss_at_ready_mb": startup["rss_at_ready_mb"]},
    }
    report = {
        "data": data_name,
        "model": {"name": MODEL_NAME, "hidden": HIDDEN, "latent_dim": LATENT_DIM,
                  "score_kind": args.score_kind, **service["model"]},
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "client": "grpc.aio in the benchmark process, pre-serialized requests, raw responses",
        "measurements": measurements,
        "ratios": {
            "service_vs_raw_ort": _ratio(measurements["b"], measurements["a"]),
            "single_row_vs_grpc_floor": _ratio(measurements["c"], measurements["d"]),
            "service_vs_pyod": _ratio(measurements["b"], measurements["e"]),
        },
        "targets": {**TARGETS, "server_peak_rss_mb": 500, "default_repo_ready_s": 5},
        # The service cannot score single rows faster than ONNX Runtime scores them in bulk, so
        # c/d can reach at most a/d on this machine whatever the transport does.
        "ceilings": {"single_row_vs_grpc_floor": _ratio(measurements["a"], measurements["d"])},
        "notes": [
            "latentwatch scores with n_importance_samples fixed noise draws per row (see model); "
            "PyOD's VAE decision_function decodes one random draw per row",
            "(a) and (e) are one caller in this process; (b)-(d) are closed-loop callers",
        ],
        "machine": _machine(threads),
        "total_s": time.perf_counter() - started_s,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(report))
    print(f"wrote {args.json} ({report['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
