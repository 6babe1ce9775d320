"""The same scorer over every protocol: latentwatch.v1, KServe v2 (gRPC and REST), the Triton
runtime, and Triton itself.

    python benchmarks/protocols.py --json out.json [--quick] [--duration-s S] [--rounds R]
                                   [--threads N]

One run on one machine, for the 784-512-256-32 MLP VAE of benchmarks/throughput.py (trained and
exported by its helpers), 256-row requests from 4 concurrent callers and 1-row requests from 64:

  (a) latentwatch.v1 Score over grpc.aio stubs, each request built and each response read with
      the wire functions the project's client uses
  (b) unmodified tritonclient.grpc.aio -> latentwatch's KServe v2 on the same gRPC port
  (c) unmodified tritonclient.http.aio, binary tensors -> latentwatch's REST port
  (d) as (a), against a latentwatch whose graphs run in (e)'s Triton (LATENTWATCH_BACKEND=triton)
  (e) tritonclient.grpc.aio -> pytriton's tritonserver serving the scorer graph directly
      (deploy/triton/serve_onnx.py on a `latentwatch triton-repo` output), asking for `score`

and, to tell client cost from server cost, pre-serialized requests with raw response bytes:
(a0) Score as benchmarks/throughput.py sends it, (b0) ModelInfer to latentwatch, (e0) ModelInfer
to Triton. Every server runs in its own process with the same thread budget: ONNX Runtime with
the same intra-op threads (one inter-op thread) in one session or model instance. Before timing,
the same rows are scored over (a)-(e) and the results compared. Every case is measured once per
round, in turn, for R rounds (default 3): a case's figures are its median round, and a ratio is
the median of the ratios within each round, so that a slow spell of a shared machine weighs on
both sides of a pair. Targets: (b) >= 0.9 x (a) and (a) >= (e) at both request sizes. Prints
a table and writes every figure to the JSON file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import processes
import throughput
import throughput_report
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from numpy.typing import NDArray
from protocol_clients import CASES, TRITON_SCORER, Targets, measure
from throughput import MODEL_NAME

from latentwatch.client.client import LatentwatchClient
from latentwatch.repository.manifest import Manifest

logger = logging.getLogger("protocols")

SIZES = {"256x4": (256, 4), "1x64": (1, 64)}  # label: (rows per request, concurrent callers)
ORDER = ("a", "b", "c", "a0", "b0", "e", "e0", "d")  # compared pairs close together in time
TARGETS = {"b_vs_a": 0.9, "a_vs_e": 1.0}
TRITON_READY_TIMEOUT_S = 180.0
QUICK_SAMPLES = 1
SCORE_RTOL = SCORE_ATOL = 1e-5  # the Triton contract test's tolerance (other batches)

def _agreement(targets: Targets, X: NDArray[np.float32]) -> dict[str, Any]:
    """The same 256 rows over (a)-(e): latentwatch's scores and p-values against (a)'s, and the
    scorer graph's neg_elbo from Triton against latentwatch's neg_elbo."""
    rows = X[:256]
    with LatentwatchClient(targets.latentwatch) as client:
        a = client.score(MODEL_NAME, rows, kinds=["neg_elbo"])
    with LatentwatchClient(targets.on_triton) as client:
        d = client.score(MODEL_NAME, rows)
    grpc_client = triton_grpc.InferenceServerClient(targets.latentwatch)
    http_client = triton_http.InferenceServerClient(targets.rest)
    triton_client = triton_grpc.InferenceServerClient(targets.triton)
    try:
        tensor = triton_grpc.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        b = grpc_client.infer(MODEL_NAME, [tensor])
        e = triton_client.infer(TRITON_SCORER, [tensor],
                                outputs=[triton_grpc.InferRequestedOutput("neg_elbo")])
        tensor_http = triton_http.InferInput("input", list(rows.shape), "FP32")
        tensor_http.set_data_from_numpy(rows, binary_data=True)
        c = http_client.infer(MODEL_NAME, [tensor_http])
    finally:
        grpc_client.close()
        http_client.close()
        triton_client.close()
    got = {
        "b": (b.as_numpy("score"), b.as_numpy("p_value"), b.as_numpy("is_outlier")),
        "c": (c.as_numpy("score"), c.as_numpy("p_value"), c.as_numpy("is_outlier")),
        "d": (d.score, d.p_value, d.is_outlier),
    }
    report: dict[str, Any] = {"rows": int(rows.shape[0]), "score_kind": a.score_kind,
                              "rtol": SCORE_RTOL, "atol": SCORE_ATOL}
    for key, (score, p_value, is_outlier) in got.items():
        report[key] = {
            "max_abs_score_diff": float(np.max(np.abs(score - a.score))),
            "scores_close": bool(np.allclose(score, a.score, rtol=SCORE_RTOL, atol=SCORE_ATOL)),
            "p_values_equal": bool(np.array_equal(p_value, a.p_value)),
            "is_outlier_equal": bool(np.array_equal(is_outlier, a.is_outlier)),
        }
    graph = e.as_numpy("neg_elbo").astype(np.float64).reshape(-1)
    ours = a.scores["neg_elbo"]
    report["e"] = {"kind": "neg_elbo", "max_abs_score_diff": float(np.max(np.abs(graph - ours))),
                   "scores_close": bool(np.allclose(graph, ours, rtol=SCORE_RTOL,
                                                    atol=SCORE_ATOL))}
    return report


def _triton_models(triton_repo: Path) -> list[tuple[str, str]]:
    """(model, newest version) of each model `latentwatch triton-repo` wrote."""
    models = []
    for config in sorted(triton_repo.glob("*/config.pbtxt")):
        versions = sorted((p.name for p in config.parent.iterdir() if p.name.isdigit()), key=int)
        models.append((config.parent.name, versions[-1]))
    return models


@dataclass(frozen=True)
class Started:
    process: processes.ServerProcess
    target: str  # gRPC HOST:PORT
    ready_s: float
    rest: str = ""  # REST HOST:PORT, when it has one


def _start_servers(repo: Path, work: Path, threads: int) -> tuple[Started, Started, Started]:
    """Triton, latentwatch on ONNX Runtime (with its REST port) and latentwatch on Triton, started
    at once (Triton takes the longest; the latter waits for its models)."""
    triton_port, http_port = processes.free_port(), processes.free_port()
    triton_target = f"127.0.0.1:{triton_port}"
    on_triton_env = {"LATENTWATCH_BACKEND": "triton", "LATENTWATCH_TRITON_URL": triton_target,
                     "LATENTWATCH_TRITON_READY_TIMEOUT_S": str(TRITON_READY_TIMEOUT_S)}
    with ThreadPoolExecutor(3) as pool:
        jobs = [
            pool.submit(processes.start_triton, work / "triton", work / "triton.log", threads,
                        _triton_models(work / "triton"), TRITON_READY_TIMEOUT_S, triton_port),
            pool.submit(processes.start_latentwatch, repo, work / "server.log", threads,
                        http_port=http_port),
            pool.submit(processes.start_latentwatch, repo, work / "on-triton.log", threads,
                        TRITON_READY_TIMEOUT_S, extra_env=on_triton_env),
        ]
        wait(jobs)
    started = [job.result() for job in jobs if job.exception() is None]
    if len(started) < len(jobs):
        for process, _, _ in started:
            process.stop()
        raise next(err for job in jobs if (err := job.exception()) is not None)
    (tp, tt, tr), (lp, lt, lr), (op, ot, orr) = started
    return (Started(tp, tt, tr), Started(lp, lt, lr, f"127.0.0.1:{http_port}"),
            Started(op, ot, orr))


PAIRS = {"b_vs_a": ("b", "a"), "a_vs_e": ("a", "e"), "c_vs_a": ("c", "a"), "d_vs_a": ("d", "a"),
         "b0_vs_a0": ("b0", "a0"), "a0_vs_e0": ("a0", "e0")}


def _ratios(rounds: list[dict[str, dict[str, dict]]]) -> dict[str, dict[str, Any]]:
    """Per size: each pair's ratio of rows/s (the targets' figure) and of rows per CPU-second,
    the median over rounds of the ratio within each round (a pair is measured minutes apart at
    most, so a slow spell of the shared machine weighs on both sides of it), with every round's."""
    ratios: dict[str, dict[str, Any]] = {}
    for size in rounds[0]:
        r: dict[str, Any] = {}
        for name, (num, den) in PAIRS.items():
            for figure, suffix in (("rows_per_s", ""), ("rows_per_cpu_s", "_per_cpu_s")):
                each = [m[size][num][figure] / m[size][den][figure] for m in rounds]
                r[f"{name}{suffix}"] = float(np.median(each))
                if not suffix:
                    r[f"{name}_rounds"] = each
            if name in TARGETS:
                r[f"{name}_met"] = r[name] >= TARGETS[name]
        ratios[size] = r
    return ratios


def _median_rounds(rounds: list[dict[str, dict[str, dict]]]) -> dict[str, dict[str, dict]]:
    """Per size and case: the round of median rows/s, with every round's rows/s beside it."""
    out: dict[str, dict[str, dict]] = {}
    for size in rounds[0]:
        out[size] = {}
        for key in rounds[0][size]:
            each = sorted((m[size][key] for m in rounds), key=lambda row: row["rows_per_s"])
            out[size][key] = {**each[(len(each) - 1) // 2],  # the lower middle of an even count
                              "rounds_rows_per_s": [m[size][key]["rows_per_s"] for m in rounds]}
    return out


def table(report: dict[str, Any]) -> str:
    m, r = report["measurements"], report["ratios"]
    head = "".join(f"{f'{s} rows/s':>14}{'p50 ms':>8}{'p99 ms':>8}{'/cpu-s':>7}" for s in SIZES)
    lines = [f"{'':47}{head}"]
    for key in CASES:
        cells = "".join(f"{m[s][key]['rows_per_s']:14.0f}{m[s][key]['latency_p50_ms']:8.1f}"
                        f"{m[s][key]['latency_p99_ms']:8.1f}{m[s][key]['rows_per_cpu_s']:7.0f}"
                        for s in SIZES)
        lines.append(f"{f'({key})':5}{CASES[key]:42}{cells}")
    for name in PAIRS:
        cells = "  ".join(f"{s} {r[s][name]:.2f} (per cpu-s {r[s][name + '_per_cpu_s']:.2f})"
                          + (f" {'met' if r[s][name + '_met'] else 'MISSED'}"
                             if name in TARGETS else "") for s in SIZES)
        target = f" target >= {TARGETS[name]}" if name in TARGETS else ""
        lines.append(f"{name}{target}: {cells}")
    other = [m[s][k]["cpu"]["other_cores"] for s in SIZES for k in CASES]
    lines.append(f"other work on the machine during the measurements: {min(other):.2f} to "
                 f"{max(other):.2f} cores of {report['machine']['cpu_count']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, type=Path, help="file to write the figures to")
    parser.add_argument("--quick", action="store_true",
                        help="less training, one noise draw per row, shorter runs")
    parser.add_argument("--duration-s", type=float, default=None,
                        help="seconds per measurement (default 10, or 0.5 with --quick)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="times every case is measured, in turn (default 3; 1 with --quick):"
                             " figures are the median round, ratios the median of per-round "
                             "ratios")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime intra-op threads of every server (0: usable CPUs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if (missing := processes.triton_missing()) is not None:
        raise SystemExit(f"protocols: {missing}")
    from latentwatch.service.runtime import usable_cpu_count

    threads = args.threads or usable_cpu_count()
    duration_s = args.duration_s or (0.5 if args.quick else 10.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    warmup_s = 0.25 if args.quick else 2.0
    started_s = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="latentwatch-protocols-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        source, X, data_name = throughput._data(work, args.quick)
        logger.info("training and exporting %s on %s", MODEL_NAME, data_name)
        # --quick: one noise draw per row instead of 16, so that the scorer is 16 times cheaper.
        samples = QUICK_SAMPLES if args.quick else None
        # The exported version's directory is <repo>/<model>/<version>.
        repo = throughput._train_and_export(work, source, args.quick, samples).parent.parent
        throughput._latentwatch("triton-repo", "--repo", str(repo), "--out", str(work / "triton"),
                                "--kind", "cpu", "--instances", "1")
        manifest = next(repo.glob(f"{MODEL_NAME}/*/manifest.json")).read_text()
        n_samples = Manifest.model_validate_json(manifest).require_latent().n_importance_samples
        servers = _start_servers(repo, work, threads)
        for server in servers:
            stack.enter_context(server.process)
        triton, server, on_triton = servers
        targets = Targets(server.target, server.rest, on_triton.target, triton.target)
        agreement = _agreement(targets, X)
        cpu = processes.CpuWatch({"triton": triton.process.pid, "latentwatch": server.process.pid,
                                  "latentwatch_on_triton": on_triton.process.pid})
        rounds = []
        for number in range(1, args.rounds + 1):
            logger.info("round %d of %d", number, args.rounds)
            rounds.append({
                size: {key: measure(key, targets, X, rows, concurrency, warmup_s, duration_s,
                                    cpu)
                       for key in ORDER}
                for size, (rows, concurrency) in SIZES.items()
            })
        for started in servers:
            started.process.check_alive()
    machine = throughput_report.machine(threads)
    for package in ("tritonclient", "aiohttp"):
        machine["versions"][package] = metadata.version(package)
    machine["versions"]["triton_peer"] = processes.triton_versions()
    report = {
        "data": data_name,
        "model": {"name": MODEL_NAME, "features": throughput.N_FEATURES,
                  "hidden": list(throughput.HIDDEN), "latent_dim": throughput.LATENT_DIM,
                  "score_kind": agreement["score_kind"],
                  "n_importance_samples": n_samples},
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "rounds": args.rounds,
        "settings": {
            "thread_budget": f"every server: ONNX Runtime with {threads} intra-op threads and 1 "
                             "inter-op thread in one session (latentwatch) or one model instance "
                             "(Triton, KIND_CPU); no CPU pinning, clients share the cores",
            "latentwatch": "defaults: max_batch_rows 256, max_batch_delay_ms 2",
            "triton": "latentwatch triton-repo defaults: max_batch_size 1024, dynamic batching "
                      "with max_queue_delay_microseconds 500, one KIND_CPU instance",
            "clients": "asyncio in the benchmark process, one channel or connection pool per "
                       "measurement; (a)-(e) build each request and read score (and p_value) "
                       "from each answer; (a0), (b0), (e0) send pre-serialized requests and "
                       "leave answers as bytes",
            "e_outputs": "score only (the graph computes every output regardless)",
        },
        "ready_s": {"triton": triton.ready_s, "latentwatch": server.ready_s,
                    "latentwatch_on_triton": on_triton.ready_s},
        "agreement": agreement,
        "measurements": _median_rounds(rounds),
        "ratios": _ratios(rounds),
        "targets": TARGETS,
        "machine": machine,
        "total_s": time.perf_counter() - started_s,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"wrote {args.json} ({report['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
