"""ONNX Runtime's CPU memory per loaded model version, and what each way of holding it costs.

    python benchmarks/ort_memory.py --json benchmarks/results/ort_memory.json [--versions 10]
        [--rounds 3] [--calls-256 40] [--calls-1 400] [--threads N] [--version-dir DIR]

The Fashion-MNIST VAE of throughput.py (784-512-256-32, 16 noise draws per row) is trained and
exported as there (--quick's size: only speed and memory matter here), unless --version-dir
names an exported version. Each variant of the session options (VARIANTS) is measured twice:

- memory: a child process per variant opens the version's scorer, encoder and decoder as the
  server does (service/ort_runtime.session_options, then the variant's change), runs each once
  on 2 rows (the server's warm-up), and scores 256 rows on the scorer; its RSS is read after
  one version and after --versions versions, loaded and scored. MB per version is the slope.
- speed: in this process, one scorer session per variant; calls go round-robin over the
  variants (the order rotated each call), --calls-256 of 256 rows and --calls-1 of 1 row a
  round. A variant's figure is its median call; its ratio is to "session" in the same round
  (a shared machine's load drifts, and neighbouring calls see the same load).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import psutil
from numpy.typing import NDArray

from latentwatch.repository.layout import DECODER_FILE, ENCODER_FILE, SCORER_FILE
from latentwatch.service.ort_runtime import session_options
from latentwatch.service.runtime import CPU, usable_cpu_count

logger = logging.getLogger("ort_memory")

MB = 1024 * 1024
SCORE_ROWS = 256
WARMUP_ROWS = 2  # as service/loader.py's warm-up
# name -> (settings.ort_cpu_arena, memory patterns on, arena shrunk after every run)
VARIANTS: dict[str, tuple[str, bool, bool]] = {
    "session": ("session", True, False),  # ONNX Runtime's default: an arena per session
    "off": ("off", True, False),  # enable_cpu_mem_arena = False
    "session_no_mem_pattern": ("session", False, False),  # enable_mem_pattern = False
    "off_no_mem_pattern": ("off", False, False),  # both
    "shared": ("shared", True, False),  # one arena for the process (session.use_env_allocators)
    "session_shrink": ("session", True, True),  # run option memory.enable_memory_arena_shrinkage
}
BASELINE = "session"


def _options(variant: str, threads: int) -> tuple[ort.SessionOptions, ort.RunOptions | None]:
    arena, mem_pattern, shrink = VARIANTS[variant]
    options = session_options(threads, arena)
    options.enable_mem_pattern = mem_pattern
    run_options = None
    if shrink:
        run_options = ort.RunOptions()
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options, run_options


def _rows(n: int, width: int) -> NDArray[np.float32]:
    return np.random.default_rng(0).random((n, width), dtype=np.float32)


def _load_version(version_dir: Path, variant: str, threads: int
                  ) -> tuple[ort.InferenceSession, ort.RunOptions | None]:
    """The version's three sessions, each run once on 2 rows; returns the scorer."""
    scorer = None
    for file in (SCORER_FILE, ENCODER_FILE, DECODER_FILE):
        options, run_options = _options(variant, threads)
        session = ort.InferenceSession((version_dir / file).read_bytes(), sess_options=options,
                                       providers=[CPU])
        spec = session.get_inputs()[0]
        session.run(None, {spec.name: _rows(WARMUP_ROWS, int(spec.shape[1]))}, run_options)
        if file == SCORER_FILE:
            scorer = session
    assert scorer is not None
    return scorer, run_options


def _child(version_dir: Path, variant: str, versions: int, threads: int) -> dict[str, Any]:
    """Runs in a fresh process: RSS after 1 and after `versions` versions, loaded and scored."""
    me = psutil.Process()
    start = me.memory_info().rss
    figures: dict[str, float] = {"rss_start_mb": start / MB}
    scorers: list[tuple[ort.InferenceSession, ort.RunOptions | None]] = []
    for count in (1, versions):
        scored = len(scorers)
        while len(scorers) < count:
            scorers.append(_load_version(version_dir, variant, threads))
        figures[f"rss_{count}_loaded_mb"] = me.memory_info().rss / MB
        for scorer, run_options in scorers[scored:]:  # those just loaded
            spec = scorer.get_inputs()[0]
            scorer.run(None, {spec.name: _rows(SCORE_ROWS, int(spec.shape[1]))}, run_options)
        figures[f"rss_{count}_scored_mb"] = me.memory_info().rss / MB
    extra = versions - 1
    return {
        "variant": variant,
        **figures,
        "mb_per_version_loaded": (figures[f"rss_{versions}_loaded_mb"]
                                  - figures["rss_1_scored_mb"]) / extra,
        "mb_per_version_scored": (figures[f"rss_{versions}_scored_mb"]
                                  - figures["rss_1_scored_mb"]) / extra,
    }


def _memory(version_dir: Path, versions: int, threads: int) -> list[dict[str, Any]]:
    rows = []
    for variant in VARIANTS:
        logger.info("memory: %s, %d versions", variant, versions)
        argv = [sys.executable, __file__, "--child", variant, "--version-dir", str(version_dir),
                "--versions", str(versions), "--threads", str(threads), "--json", "-"]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout))
    return rows


def _speed(version_dir: Path, threads: int, rounds: int, calls: dict[int, int]
           ) -> dict[str, Any]:
    sessions = {}
    for variant in VARIANTS:
        options, run_options = _options(variant, threads)
        sessions[variant] = (ort.InferenceSession(str(version_dir / SCORER_FILE),
                                                  sess_options=options, providers=[CPU]),
                             run_options)
    name = sessions[BASELINE][0].get_inputs()[0].name
    X = _rows(4096, int(sessions[BASELINE][0].get_inputs()[0].shape[1]))
    names = list(VARIANTS)
    per_round: dict[int, list[dict[str, float]]] = {rows: [] for rows in calls}
    for r in range(rounds):
        for rows, n_calls in calls.items():
            logger.info("speed: round %d, %d-row calls", r + 1, rows)
            times: dict[str, list[float]] = {v: [] for v in names}
            for session, run_options in sessions.values():  # warm: arenas at their size
                session.run(None, {name: X[:rows]}, run_options)
            for i in range(n_calls):
                offset = (i * rows) % (X.shape[0] - rows + 1)
                feeds = {name: X[offset : offset + rows]}
                k = i % len(names)
                for variant in names[k:] + names[:k]:
                    session, run_options = sessions[variant]
                    start_s = time.perf_counter()
                    session.run(None, feeds, run_options)
                    times[variant].append(time.perf_counter() - start_s)
            per_round[rows].append({v: rows / float(np.median(t)) for v, t in times.items()})
    result: dict[str, Any] = {}
    for rows, results in per_round.items():
        result[f"{rows}_rows"] = {
            variant: {
                "rows_per_s_by_round": [r[variant] for r in results],
                "ratio_to_session_by_round": [r[variant] / r[BASELINE] for r in results],
                "ratio_to_session_median": float(np.median(
                    [r[variant] / r[BASELINE] for r in results])),
            }
            for variant in names
        }
    return result


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="file to write the figures to")
    parser.add_argument("--version-dir", type=Path, default=None,
                        help="an exported version (default: train and export one)")
    parser.add_argument("--versions", type=int, default=10,
                        help="versions loaded in each memory child (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="speed rounds (default 3)")
    parser.add_argument("--calls-256", type=int, default=40,
                        help="256-row calls per variant a round (default 40)")
    parser.add_argument("--calls-1", type=int, default=400,
                        help="1-row calls per variant a round (default 400)")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads per session (default 0: usable CPUs)")
    parser.add_argument("--child", choices=list(VARIANTS), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.versions < 2:
        parser.error("--versions must be at least 2 (MB per version is a slope)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    threads = args.threads or usable_cpu_count()
    if args.child is not None:
        print(json.dumps(_child(args.version_dir, args.child, args.versions, threads)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started_s = time.perf_counter()
    load_before = list(psutil.getloadavg())
    with tempfile.TemporaryDirectory(prefix="latentwatch-ortmem-") as tmp:
        version_dir = args.version_dir
        if version_dir is None:
            from throughput import _data, _train_and_export

            source, _, _ = _data(Path(tmp), quick=True)
            version_dir = _train_and_export(Path(tmp), source, quick=True, n_samples=None)
        memory = _memory(version_dir, args.versions, threads)
        speed = _speed(version_dir, threads, args.rounds, {256: args.calls_256, 1: args.calls_1})
    report = {
        "what": "ONNX Runtime CPU session options against RSS per loaded version and rows/s; "
                "the Fashion-MNIST VAE of throughput.py, 16 noise draws per row",
        "variants": {v: {"ort_cpu_arena": a, "enable_mem_pattern": p, "arena_shrinkage": s}
                     for v, (a, p, s) in VARIANTS.items()},
        "onnxruntime": ort.__version__,
        "threads": threads,
        "versions": args.versions,
        "memory": memory,
        "speed": speed,
        "rounds": args.rounds,
        "calls": {"256_rows": args.calls_256, "1_row": args.calls_1},
        "machine": {"cpu_count": psutil.cpu_count(), "loadavg_before": load_before,
                    "loadavg_after": list(psutil.getloadavg())},
        "total_s": time.perf_counter() - started_s,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    for row in memory:
        print(f"{row['variant']:24} {row['mb_per_version_loaded']:6.1f} MB/version loaded, "
              f"{row['mb_per_version_scored']:6.1f} MB/version scored")
    for rows in (256, 1):
        for variant, figures in speed[f"{rows}_rows"].items():
            by_round = ", ".join(f"{r:.2f}" for r in figures["ratio_to_session_by_round"])
            print(f"{rows:3}-row {variant:24} x{figures['ratio_to_session_median']:.3f} "
                  f"of session (rounds {by_round})")
    print(f"wrote {args.json} ({report['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
