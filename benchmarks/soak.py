"""Soak: hours of mixed load on a real `latentwatch serve`; does its memory or latency creep?

    python benchmarks/soak.py --json soak.json [--repo DIR] [--model NAME]
        [--duration-s 3600] [--window-s 600] [--concurrency 8] [--threads N] [--quick]

Serves --repo (default: a digits VAE trained for a few epochs and exported to a temporary
repository) in a `latentwatch serve` subprocess and drives it from --concurrency closed-loop
callers in this process, each cycling through a weighted mix: Score with 1, 16 and 256 rows,
ScoreStream (8 requests of 16 rows), Encode, BiasReport streams (4 chunks of 250 rows with a
group column), ListModels, GetModel, and bad requests (a wrong shape, an unknown model, bytes
that are not a protobuf), each with the status it should end with.

Every --window-s it records the server's resident memory (at the window's end and its peak),
open file descriptors and threads, and per operation the calls, p50/p99 latency, status codes
and calls that ended with another status than expected; it prints the window's table. At the
end it prints one line per window and the slopes (least squares over the windows after the
first, which holds the warm-up): RSS in MB/hour and each operation's p99 in ms/hour. A flat
server has slopes near 0; over a short run (--quick: 60 s in 10 s windows, for trying it) they
are noise extrapolated to an hour. Writes every figure to --json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
from grpc_load import CALL_TIMEOUT_S, MAX_MESSAGE_BYTES, PeakRss
from numpy.typing import NDArray
from processes import ServerProcess, start_latentwatch

from latentwatch.client.client import LatentwatchClient
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.repository.manifest import Manifest
from latentwatch.wire.tensors import to_tensor

logger = logging.getLogger("soak")

SERVICE_PATH = "/latentwatch.v1.Latentwatch"
TRAINED_MODEL = "digits-vae"
MB = 1024 * 1024
RSS_POLL_S = 1.0
STOP_WAIT_S = CALL_TIMEOUT_S + 5


@dataclass(frozen=True)
class Operation:
    """One kind of call of the mix, serialized once: bytes out, bytes back."""

    name: str
    method: str
    shape: str  # "unary", "stream_stream" or "stream_unary"
    messages: tuple[bytes, ...]
    expected: str = "OK"
    weight: int = 1


def _rows(manifest: Manifest, n: int, seed: int) -> NDArray[np.float32]:
    """Rows in the model's raw input range: its preprocessing undone on standard normal rows."""
    pre = manifest.input.preprocessing
    shift = np.asarray(pre.shift, dtype=np.float64)
    scale = np.asarray(pre.scale, dtype=np.float64)
    x = shift + np.random.default_rng(seed).normal(size=(n, manifest.n_features)) / scale
    if pre.clip is not None:
        a, b = (bound / scale + shift for bound in pre.clip)  # the clip in raw units
        x = np.clip(x, np.minimum(a, b), np.maximum(a, b))
    return x.astype(np.float32)


def operations(model: str, manifest: Manifest) -> list[Operation]:
    def score(rows: int, seed: int, name: str = model) -> bytes:
        request = pb.ScoreRequest(model_name=name, input=to_tensor(_rows(manifest, rows, seed)))
        return request.SerializeToString()

    def chunk(i: int) -> bytes:
        request = pb.BiasReportRequest(model_name=model, input=to_tensor(_rows(manifest, 250, i)))
        request.groups.add(name="site", values=["abcd"[j % 4] for j in range(250)])
        return request.SerializeToString()

    wrong = pb.ScoreRequest(model_name=model, input=to_tensor(np.zeros((4, manifest.n_features
                                                                         + 1), np.float32)))
    return [
        Operation("Score x1", "Score", "unary", (score(1, 1),), weight=6),
        Operation("Score x16", "Score", "unary", (score(16, 2),), weight=4),
        Operation("Score x256", "Score", "unary", (score(256, 3),), weight=2),
        Operation("ScoreStream 8x16", "ScoreStream", "stream_stream",
                  tuple(score(16, 10 + i) for i in range(8)), weight=2),
        Operation("Encode x64", "Encode", "unary", (pb.EncodeRequest(
            model_name=model, input=to_tensor(_rows(manifest, 64, 4))).SerializeToString(),),
            weight=2),
        Operation("BiasReport 4x250", "BiasReport", "stream_unary",
                  tuple(chunk(20 + i) for i in range(4))),
        Operation("ListModels", "ListModels", "unary",
                  (pb.ListModelsRequest().SerializeToString(),)),
        Operation("GetModel", "GetModel", "unary",
                  (pb.GetModelRequest(model_name=model).SerializeToString(),)),
        Operation("bad: wrong shape", "Score", "unary", (wrong.SerializeToString(),),
                  expected="INVALID_ARGUMENT"),
        Operation("bad: unknown model", "Score", "unary", (score(2, 5, "no-such-model"),),
                  expected="NOT_FOUND"),
        Operation("bad: not a protobuf", "Score", "unary", (b"\x07not a protobuf",),
                  expected="INVALID_ARGUMENT"),
    ]


class WindowStats:
    """What the calls that completed in one window did."""

    def __init__(self) -> None:
        self.latencies_s: dict[str, list[float]] = defaultdict(list)
        self.codes: dict[str, Counter[str]] = defaultdict(Counter)

    def record(self, operation: Operation, latency_s: float, code: str) -> None:
        self.latencies_s[operation.name].append(latency_s)
        self.codes[operation.name][code] += 1

    def summary(self, ops: list[Operation]) -> dict[str, dict[str, Any]]:
        result = {}
        for op in ops:
            lat_ms = np.asarray(self.latencies_s.get(op.name, []), dtype=np.float64) * 1e3
            codes = dict(self.codes.get(op.name, {}))
            result[op.name] = {
                "calls": int(lat_ms.size),
                "p50_ms": float(np.percentile(lat_ms, 50)) if lat_ms.size else None,
                "p99_ms": float(np.percentile(lat_ms, 99)) if lat_ms.size else None,
                "codes": codes,
                "errors": {c: n for c, n in codes.items() if c != "OK"},
                "unexpected": sum(n for c, n in codes.items() if c != op.expected),
            }
        return result


async def _call(channel: grpc.aio.Channel, op: Operation) -> str:
    """Makes the call; returns the status code's name."""
    path = f"{SERVICE_PATH}/{op.method}"
    try:
        if op.shape == "unary":
            await channel.unary_unary(path)(op.messages[0], timeout=CALL_TIMEOUT_S)
        elif op.shape == "stream_stream":
            async for _ in channel.stream_stream(path)(iter(op.messages), timeout=CALL_TIMEOUT_S):
                pass
        else:
            await channel.stream_unary(path)(iter(op.messages), timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as err:
        return str(err.code().name)
    return "OK"


def _process_figures(process: psutil.Process) -> dict[str, float | int | None]:
    try:
        with process.oneshot():
            return {"rss_mb": process.memory_info().rss / MB, "open_fds": process.num_fds(),
                    "threads": process.num_threads()}
    except psutil.Error:
        return {"rss_mb": None, "open_fds": None, "threads": None}


async def soak(
    target: str, server: ServerProcess, ops: list[Operation], *, duration_s: float,
    window_s: float, concurrency: int,
) -> list[dict[str, Any]]:
    """Closed-loop mixed load for duration_s; one summary per window, printed as it ends."""
    schedule = [i for i, op in enumerate(ops) for _ in range(op.weight)]
    process = psutil.Process(server.pid)
    current = [WindowStats()]
    stopping = asyncio.Event()
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=CALL_TIMEOUT_S)

        async def caller(first: int) -> None:
            # Callers start at spread offsets, so the mix is spread over time too.
            for index in islice(cycle(schedule), first * len(schedule) // concurrency, None):
                if stopping.is_set():
                    return
                sent_s = time.perf_counter()
                code = await _call(channel, ops[index])
                current[0].record(ops[index], time.perf_counter() - sent_s, code)

        callers = [asyncio.create_task(caller(i)) for i in range(concurrency)]
        windows: list[dict[str, Any]] = []
        start_s = time.perf_counter()
        n_windows = max(1, int(np.ceil(duration_s / window_s - 1e-9)))
        try:
            for index in range(n_windows):
                end_s = start_s + min((index + 1) * window_s, duration_s)
                with PeakRss(server.pid, interval_s=RSS_POLL_S) as peak:
                    await asyncio.sleep(max(end_s - time.perf_counter(), 0.0))
                finished, current[0] = current[0], WindowStats()
                figures = _process_figures(process)
                window = {
                    "index": index, "end_s": time.perf_counter() - start_s, **figures,
                    "peak_rss_mb": max(peak.peak_bytes / MB, figures["rss_mb"] or 0.0),
                    "operations": finished.summary(ops),
                }
                windows.append(window)
                print(window_table(window), flush=True)
                if server.process.poll() is not None:
                    logger.error("server exited with %s; stopping", server.process.returncode)
                    break
        finally:
            stopping.set()
            await asyncio.wait(callers, timeout=STOP_WAIT_S)
            for task in callers:
                task.cancel()
    return windows


def slope_per_hour(times_s: list[float], values: list[float | None]) -> float | None:
    """Least-squares slope of values over time, per hour; None with fewer than two points."""
    points = [(t, v) for t, v in zip(times_s, values, strict=True) if v is not None]
    if len(points) < 2:
        return None
    t, v = np.asarray(points, dtype=np.float64).T
    return float(np.polyfit(t / 3600.0, v, 1)[0])


def slopes(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the windows after the first (warm-up: arenas, caches, first batches), or over every
    window when there are only two."""
    used = windows[1:] if len(windows) >= 3 else windows
    times_s = [w["end_s"] for w in used]
    names = list(windows[0]["operations"]) if windows else []
    return {
        "windows": [w["index"] for w in used],
        "rss_mb_per_hour": slope_per_hour(times_s, [w["rss_mb"] for w in used]),
        "peak_rss_mb_per_hour": slope_per_hour(times_s, [w["peak_rss_mb"] for w in used]),
        "open_fds_per_hour": slope_per_hour(times_s, [w["open_fds"] for w in used]),
        "threads_per_hour": slope_per_hour(times_s, [w["threads"] for w in used]),
        "p99_ms_per_hour": {
            name: slope_per_hour(times_s, [w["operations"][name]["p99_ms"] for w in used])
            for name in names
        },
    }


def _shown(value: float | None, spec: str = ".2f") -> str:
    """A figure for the tables; "-" when there is none (no calls, or the server is gone)."""
    return "-" if value is None else format(value, spec)


def window_table(window: dict[str, Any]) -> str:
    lines = [f"window {window['index']} (to {window['end_s']:.0f} s): RSS "
             f"{_shown(window['rss_mb'], '.1f')} MB (peak {window['peak_rss_mb']:.1f}), "
             f"{_shown(window['open_fds'], 'd')} fds, {_shown(window['threads'], 'd')} threads",
             f"  {'operation':22}{'calls':>8}{'p50 ms':>9}{'p99 ms':>9}{'unexpected':>11}  errors"]
    for name, op in window["operations"].items():
        errors = ", ".join(f"{code} {n}" for code, n in sorted(op["errors"].items())) or "-"
        lines.append(f"  {name:22}{op['calls']:8d}{_shown(op['p50_ms']):>9}"
                     f"{_shown(op['p99_ms']):>9}"
                     f"{op['unexpected']:11d}  {errors}")
    return "\n".join(lines)


def summary_table(report: dict[str, Any]) -> str:
    lines = [f"{'window':>6}{'end s':>8}{'RSS MB':>9}{'peak MB':>9}{'fds':>6}{'threads':>8}"
             f"{'calls':>9}{'Score x1 p99':>13}{'unexpected':>11}"]
    for w in report["windows"]:
        ops = w["operations"]
        lines.append(
            f"{w['index']:6d}{w['end_s']:8.0f}{_shown(w['rss_mb'], '.1f'):>9}"
            f"{w['peak_rss_mb']:9.1f}{_shown(w['open_fds'], 'd'):>6}{_shown(w['threads'], 'd'):>8}"
            f"{sum(o['calls'] for o in ops.values()):9d}{_shown(ops['Score x1']['p99_ms']):>13}"
            f"{sum(o['unexpected'] for o in ops.values()):11d}"
        )
    s = report["slopes"]

    def per_hour(value: float | None, unit: str) -> str:
        return "n/a" if value is None else f"{value:+.2f} {unit}/hour"

    lines.append(f"slopes over windows {s['windows']}: RSS {per_hour(s['rss_mb_per_hour'], 'MB')}"
                 f", peak RSS {per_hour(s['peak_rss_mb_per_hour'], 'MB')}, fds "
                 f"{per_hour(s['open_fds_per_hour'], '')}, threads "
                 f"{per_hour(s['threads_per_hour'], '')}")
    lines += [f"  p99 {name:22} {per_hour(value, 'ms')}"
              for name, value in s["p99_ms_per_hour"].items()]
    return "\n".join(lines)


def train_repo(work: Path, epochs: int) -> Path:
    """A digits VAE trained and exported with the CLI, in a child process (torch stays out)."""
    cli = [sys.executable, "-m", "latentwatch", "--log-level", "WARNING"]
    run, repo = work / "run", work / "repo"
    subprocess.run([*cli, "train", "--data", "digits", "--model", "vae", "--out", str(run),
                    "--epochs", str(epochs), "--seed", "0"], check=True)
    subprocess.run([*cli, "export", str(run), "--repo", str(repo), "--name", TRAINED_MODEL],
                   check=True)
    return repo


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="file to write the figures to")
    parser.add_argument("--repo", type=Path, default=None,
                        help="repository to serve (default: train a digits VAE)")
    parser.add_argument("--model", default="", help="model to load (default: the first listed)")
    parser.add_argument("--duration-s", type=float, default=None, help="default 3600 (quick 60)")
    parser.add_argument("--window-s", type=float, default=None, help="default 600 (quick 10)")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop callers")
    parser.add_argument("--threads", type=int, default=0,
                        help="server ONNX Runtime threads (0: usable CPUs)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 8)")
    parser.add_argument("--quick", action="store_true", help="60 s in 10 s windows, 2 epochs")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    args.duration_s = args.duration_s or (60.0 if args.quick else 3600.0)
    args.window_s = args.window_s or (10.0 if args.quick else 600.0)
    args.epochs = args.epochs or (2 if args.quick else 8)
    if args.duration_s <= 0 or args.window_s <= 0 or args.concurrency < 1:
        parser.error("--duration-s, --window-s and --concurrency must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started_s = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="latentwatch-soak-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.repo is None:
            logger.info("training and exporting %s (%d epochs)", TRAINED_MODEL, args.epochs)
        repo = args.repo or train_repo(work, args.epochs)
        server, target, ready_s = start_latentwatch(repo, work / "server.log", args.threads)
        with server:
            with LatentwatchClient(target) as client:
                model = args.model or client.list_models()[0].name
                manifest = Manifest.model_validate_json(client.get_model(model).manifest_json)
            ops = operations(model, manifest)
            logger.info("soaking %s for %.0f s in %.0f s windows, %d callers", model,
                        args.duration_s, args.window_s, args.concurrency)
            windows = asyncio.run(soak(target, server, ops, duration_s=args.duration_s,
                                       window_s=args.window_s, concurrency=args.concurrency))
            exit_code = server.process.poll()
            log_tail = server.log_tail() if exit_code is not None else ""
    report = {
        "model": model,
        "duration_s": args.duration_s,
        "window_s": args.window_s,
        "concurrency": args.concurrency,
        "server_threads_setting": args.threads,
        "server_ready_s": ready_s,
        "server_exit_code": exit_code,
        "server_log_tail": log_tail,
        "operations": [{"name": op.name, "method": op.method, "expected": op.expected,
                        "weight": op.weight, "messages": len(op.messages)} for op in ops],
        "windows": windows,
        "slopes": slopes(windows),
        "total_s": time.perf_counter() - started_s,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(summary_table(report))
    print(f"wrote {args.json} ({report['total_s']:.0f} s)")
    return 0 if exit_code is None else 1


if __name__ == "__main__":
    sys.exit(main())
