"""What explanations cost: Score rows/s with explain off, top-5 and every feature explained.

    python benchmarks/explain_cost.py --json benchmarks/results/explain_cost.json
        [--repo DIR --model NAME] [--rounds R] [--duration-s S] [--concurrency C]
        [--threads N] [--epochs E]

On digits (8x8 images, 64 features): a conv VAE trained as `latentwatch train --data digits`
trains it (with --epochs), exported to a temporary repository, unless --repo names one. The
server runs in its own process; 256-row Score requests come from C concurrent callers in this
process (benchmarks/grpc_load.py), the same rows in every mode. Each round measures the three
modes one after another for S seconds each after a warm-up; a mode's figure is its median
round, a ratio the median of the per-round ratios (the modes of one round share the machine's
state; each round starts with the next mode, so drift over the run cancels). After each mode's
load, --cpu-calls sequential requests measure the server's CPU time per row (all its threads):
on a machine shared with other work the wall-clock rows/s swing by tens of percent between
rounds, the CPU cost per row far less, so the report gives both, and rows per server CPU-second
against explain off as `cpu_ratio_vs_off`. Prints a table and writes every figure to the JSON
file.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
from grpc_load import CALL_TIMEOUT_S, MAX_MESSAGE_BYTES, SCORE_METHOD, call_once, run_load
from processes import start_latentwatch

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.score import score_request

logger = logging.getLogger("explain_cost")

BATCH_ROWS = 256
MODEL_NAME = "digits-vae"
# Mode -> explain_top_k sent (None: explain off; 0 would be the server's default of 5).
MODES: dict[str, int | None] = {"off": None, "top5": 5, "all": 64}


def _latentwatch(*args: str) -> None:
    argv = [sys.executable, "-m", "latentwatch", "--log-level", "WARNING", *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{done.stdout}\n{done.stderr}")


def _train_and_export(work: Path, epochs: int) -> Path:
    repo = work / "repo"
    _latentwatch("train", "--data", "digits", "--model", "vae", "--out", str(work / "run"),
                 "--epochs", str(epochs), "--seed", "0")
    _latentwatch("export", str(work / "run"), "--repo", str(repo), "--name", MODEL_NAME)
    return repo


def _payloads(model: str, rows: np.ndarray, top_k: int | None) -> list[bytes]:
    return [
        score_request(model, rows[i : i + BATCH_ROWS], "", (), None, None, "",
                      explain_top_k=top_k).SerializeToString()
        for i in range(0, len(rows) - BATCH_ROWS + 1, BATCH_ROWS)
    ]


def _check(target: str, payload: bytes, top_k: int | None) -> None:
    """One call per mode: explanations come back exactly when asked, k per row."""
    response = pb.ScoreResponse.FromString(call_once(target, payload))
    widths = {len(e.features) for e in response.explanations}
    expected = set() if top_k is None else {top_k}
    if widths != expected:
        raise RuntimeError(f"explain_top_k {top_k}: responses carry widths {sorted(widths)}")


def _server_cpu_ms_per_row(target: str, pid: int, payloads: list[bytes], calls: int) -> float:
    """Server CPU time (user + system, every thread) per row over `calls` sequential requests
    on one channel: unlike rows/s, other work on the machine hardly moves it."""
    server = psutil.Process(pid)
    with grpc.insecure_channel(
        target, options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    ) as channel:
        call = channel.unary_unary(SCORE_METHOD)
        call(payloads[0], timeout=CALL_TIMEOUT_S)  # the channel and first-call costs, unmeasured
        before = server.cpu_times()
        for i in range(calls):
            call(payloads[i % len(payloads)], timeout=CALL_TIMEOUT_S)
        after = server.cpu_times()
    cpu_s = (after.user - before.user) + (after.system - before.system)
    return 1e3 * cpu_s / (calls * BATCH_ROWS)


def _median(values: list[float]) -> float:
    return float(np.median(values))


def measure(args: argparse.Namespace, repo: Path, work: Path) -> dict[str, Any]:
    from latentwatch.data import load_source

    rows = load_source("digits").X  # (1797, 64)
    payloads = {mode: _payloads(args.model, rows, k) for mode, k in MODES.items()}
    server, target, ready_s = start_latentwatch(repo, work / "server.log", args.threads)
    rounds: list[dict[str, Any]] = []
    try:
        for mode, k in MODES.items():
            _check(target, payloads[mode][0], k)
        for index in range(args.rounds):
            figures = {}
            modes = list(MODES)
            shift = index % len(modes)  # each round starts with the next mode: drift cancels
            for mode in modes[shift:] + modes[:shift]:
                result = run_load(target, payloads[mode], rows_per_request=BATCH_ROWS,
                                  concurrency=args.concurrency, warmup_s=args.warmup_s,
                                  duration_s=args.duration_s)
                figures[mode] = result.as_dict()
                figures[mode]["server_cpu_ms_per_row"] = _server_cpu_ms_per_row(
                    target, server.pid, payloads[mode], args.cpu_calls)
            rounds.append(figures)
            logger.info("round %d: %s", index + 1, {m: round(f["rows_per_s"]) for m, f in
                                                    figures.items()})
    finally:
        server.stop()
    per_mode = {mode: {key: _median([r[mode][key] for r in rounds]) for key in
                       ("rows_per_s", "latency_p50_ms", "server_cpu_ms_per_row")}
                for mode in MODES}
    per_round = {mode: [r[mode]["rows_per_s"] / r["off"]["rows_per_s"] for r in rounds]
                 for mode in MODES if mode != "off"}
    ratios = {mode: _median(values) for mode, values in per_round.items()}
    # Rows per server CPU-second against explain off: off's CPU per row over the mode's.
    cpu_ratios = {mode: _median([r["off"]["server_cpu_ms_per_row"]
                                 / r[mode]["server_cpu_ms_per_row"] for r in rounds])
                  for mode in per_round}
    return {
        "benchmark": "explain_cost",
        "model": args.model,
        "data": "digits (1797 rows, 64 features)",
        "rows_per_request": BATCH_ROWS,
        "concurrency": args.concurrency,
        "threads": args.threads,
        "rounds": args.rounds,
        "duration_s": args.duration_s,
        "server_ready_s": ready_s,
        "modes": {m: ("off" if k is None else f"explain_top_k={k}") for m, k in MODES.items()},
        "median": per_mode,
        "ratio_vs_off": ratios,
        "ratio_vs_off_range": {m: [min(v), max(v)] for m, v in per_round.items()},
        "cpu_ratio_vs_off": cpu_ratios,
        "per_round": rounds,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _table(report: dict[str, Any]) -> str:
    lines = [f"{'mode':<6} {'rows/s':>8} {'p50 ms':>8} {'vs off':>7} {'range':>10} "
             f"{'cpu ms/row':>10} {'vs off':>7}"]
    for mode in MODES:
        figures = report["median"][mode]
        ratio = report["ratio_vs_off"].get(mode, 1.0)
        low, high = report["ratio_vs_off_range"].get(mode, [1.0, 1.0])
        cpu_ratio = report["cpu_ratio_vs_off"].get(mode, 1.0)
        lines.append(f"{mode:<6} {figures['rows_per_s']:>8.0f} {figures['latency_p50_ms']:>8.1f} "
                     f"{ratio:>6.2f}x {low:>4.2f}-{high:<4.2f} "
                     f"{figures['server_cpu_ms_per_row']:>10.3f} {cpu_ratio:>6.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the figures")
    parser.add_argument("--repo", type=Path, default=None,
                        help="a repository holding --model (default: train and export one)")
    parser.add_argument("--model", default=MODEL_NAME, help=f"(default: {MODEL_NAME})")
    parser.add_argument("--rounds", type=int, default=3, help="(default: 3)")
    parser.add_argument("--duration-s", type=float, default=5.0, help="per mode (default: 5)")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="per mode (default: 1)")
    parser.add_argument("--concurrency", type=int, default=4, help="callers (default: 4)")
    parser.add_argument("--cpu-calls", type=int, default=8,
                        help="sequential requests per mode and round for the server's CPU time "
                             "per row (default: 8)")
    parser.add_argument("--threads", type=int, default=1,
                        help="ONNX Runtime intra-op threads of the server (default: 1)")
    parser.add_argument("--epochs", type=int, default=8,
                        help="training epochs when no --repo is given (default: 8)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="for the run, repository and server log (default: a temporary one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work_dir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        repo = args.repo or _train_and_export(work, args.epochs)
        report = measure(args, repo, work)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(report))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
