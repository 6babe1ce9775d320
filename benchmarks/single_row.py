"""The single-row path alone: throughput.py's (c) and (d), in rounds, with each server's CPU.

    python benchmarks/single_row.py [--repo DIR] [--quick] [--n-importance-samples K]
        [--rounds R] [--duration-s S] [--threads N] [--baseline-path DIR] [--env KEY=VALUE]
        [--json FILE]

(c) 1-row Score requests from 64 concurrent callers to `latentwatch serve`, and (d) the same
payloads to the no-op grpc.aio server (noop_server.py), for throughput.py's 784-512-256-32 MLP
VAE: the version in `--repo` when it holds one, else trained and exported with throughput.py's
helpers (into `--repo` when given, so that the next run reuses it). Both servers stay up and are
measured in turn, round after round (default 5): c/d is the median of the rounds' ratios, so a
slow spell of a shared machine weighs on both sides.

With `--baseline-path DIR`, a second latentwatch server imports the package from DIR (a tree
laid out as installed: latentwatch/ with service/, protos/, models/ and export/ inside) and is
measured in the same rounds as (c0): c/c0 is what a change to the serving path gained.
`--env LATENTWATCH_...=VALUE` (repeatable) sets a variable for (c) alone: with `--baseline-path`
on the same tree, c/c0 is what a setting changes.

Each row has the server's CPU per request (its process's cores during the measurement over the
requests answered per second), the figure that tells a server's work from the machine's load.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import throughput
from grpc_load import call_once, run_load
from processes import CpuWatch, ServerProcess, start_latentwatch, start_noop
from throughput import MODEL_NAME

from latentwatch.client.client import LatentwatchClient
from latentwatch.repository.layout import find_versions
from latentwatch.repository.manifest import Manifest

logger = logging.getLogger("single_row")

CONCURRENCY = 64
PAYLOADS = 256  # distinct 1-row requests, as throughput.py sends them


def _version_dir(repo: Path | None, work: Path, quick: bool, samples: int | None) -> Path:
    """The version in `repo` when it has one, else one trained and exported (into `repo`)."""
    if repo is not None and repo.is_dir():
        found = [d for name, _, d in find_versions(repo) if name == MODEL_NAME]
        if found:
            return found[-1]
    source, _, data_name = throughput._data(work, quick)
    logger.info("training and exporting %s on %s", MODEL_NAME, data_name)
    version_dir = throughput._train_and_export(work, source, quick, samples)
    if repo is None:
        return version_dir
    repo.mkdir(parents=True, exist_ok=True)
    kept = repo / MODEL_NAME
    version_dir.parent.rename(kept)
    return kept / version_dir.name


def _measure(target: str, pid: int, payloads: list[bytes], what: str, warmup_s: float,
             duration_s: float) -> dict[str, Any]:
    with CpuWatch({"server": pid}) as cpu:
        load = run_load(target, payloads, rows_per_request=1, concurrency=CONCURRENCY,
                        warmup_s=warmup_s, duration_s=duration_s)
    server_cores = cpu.figures["cores"]["server"]
    return {"what": what, **load.as_dict(), "cpu": cpu.figures,
            "server_cpu_ms_per_request": 1e3 * server_cores / load.requests_per_s}


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=None,
                        help="repository with the model, exported into it when it has none "
                        "(default: a temporary one)")
    parser.add_argument("--quick", action="store_true",
                        help="train on fewer rows when exporting (default: off)")
    parser.add_argument("--n-importance-samples", type=int, default=None,
                        help="noise draws per row in an exported scorer (default: training's)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of c and d (default 5)")
    parser.add_argument("--duration-s", type=float, default=5.0,
                        help="seconds per measurement (default 5)")
    parser.add_argument("--warmup-s", type=float, default=1.0,
                        help="seconds of load before each measurement (default 1)")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime threads (default 0: usable CPUs)")
    parser.add_argument("--baseline-path", type=Path, default=None,
                        help="package tree a second server imports, measured as c0")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment variable for server (c) only (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="file to write the figures to")
    return parser.parse_args(argv)


def _started(stack: ExitStack, repo: Path, work: Path, threads: int, name: str,
             env: dict[str, str] | None = None) -> tuple[ServerProcess, str]:
    server, target, _ = start_latentwatch(repo, work / f"{name}.log", threads, extra_env=env)
    stack.enter_context(server)
    return server, target


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from latentwatch.service.runtime import usable_cpu_count

    threads = args.threads or usable_cpu_count()
    with tempfile.TemporaryDirectory(prefix="latentwatch-single-row-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        version_dir = _version_dir(args.repo, work, args.quick, args.n_importance_samples)
        repo = version_dir.parents[1]
        _, X, _ = throughput._data(work, args.quick)  # the rows to score
        env = dict(item.split("=", 1) for item in args.env)
        servers = {"c": _started(stack, repo, work, threads, "server", env)}
        if args.baseline_path is not None:
            servers["c0"] = _started(stack, repo, work, threads, "baseline",
                                     {"PYTHONPATH": str(args.baseline_path.resolve())})
        target = servers["c"][1]
        with LatentwatchClient(target) as client:
            info = client.get_model(MODEL_NAME)
        samples = Manifest.model_validate_json(info.manifest_json).require_latent()
        payloads = throughput._requests(X, 1, PAYLOADS, info.default_score_kind)
        canned = work / "canned-response.bin"
        canned.write_bytes(call_once(target, payloads[0]))
        noop, noop_target = start_noop(canned, work / "noop.log")
        stack.enter_context(noop)
        call_once(noop_target, payloads[0])  # waits until it listens
        rounds = []
        for number in range(1, args.rounds + 1):
            measured = {}
            for key, (server, at) in servers.items():
                measured[key] = _measure(at, server.pid, payloads, f"latentwatch ({key})",
                                         args.warmup_s, args.duration_s)
            measured["d"] = _measure(noop_target, noop.pid, payloads, "no-op grpc.aio (d)",
                                     args.warmup_s, args.duration_s)
            for server, _ in servers.values():
                server.check_alive()
            rounds.append(measured)
            logger.info("round %d: %s", number, _line(measured))
    summary = _summary(rounds)
    summary = {"n_importance_samples": samples.n_importance_samples, "threads": threads,
               **summary}
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=2) + "\n")
    return 0


def _line(measured: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{key} {m['rows_per_s']:,.0f} rows/s "
                     f"({m['server_cpu_ms_per_request']:.3f} ms CPU/request)"
                     for key, m in measured.items())


def _summary(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Median rows/s and CPU per request of each server; ratios as medians of per-round ones."""
    keys = list(rounds[0])
    summary: dict[str, Any] = {
        key: {"rows_per_s": float(np.median([r[key]["rows_per_s"] for r in rounds])),
              "server_cpu_ms_per_request": float(np.median(
                  [r[key]["server_cpu_ms_per_request"] for r in rounds])),
              "latency_p50_ms": float(np.median([r[key]["latency_p50_ms"] for r in rounds]))}
        for key in keys
    }
    pairs = [("c", "d"), *([("c", "c0"), ("c0", "d")] if "c0" in keys else [])]
    for num, den in pairs:
        each = [r[num]["rows_per_s"] / r[den]["rows_per_s"] for r in rounds]
        summary[f"{num}/{den}"] = float(np.median(each))
        summary[f"{num}/{den}_rounds"] = [round(x, 3) for x in each]
    return summary


if __name__ == "__main__":
    sys.exit(main())
