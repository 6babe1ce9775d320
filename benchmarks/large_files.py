"""Large files through `latentwatch score`: rows/s and the client's peak memory.

    python benchmarks/large_files.py --json large.json   # a 2 GB CSV, a 10M-row Parquet file
    python benchmarks/large_files.py --json out.json --quick   # a smoke test (seconds)

Trains and exports a small VAE on a synthetic 12-column table, writes a CSV of about --csv-mb
megabytes and a Parquet file of --parquet-rows rows (row groups of 1M rows), starts
`latentwatch serve` as a subprocess and scores each file with the `latentwatch score` CLI as a
subprocess, polling its resident memory with psutil. The target is a peak client RSS under
300 MB whatever the file size. Everything lives in a temporary directory unless --work-dir.
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
from numpy.typing import NDArray
from processes import start_latentwatch

logger = logging.getLogger("large_files")

N_FEATURES = 12
NAMES = [f"f{i}" for i in range(N_FEATURES)]
WRITE_BLOCK_ROWS = 200_000
PARQUET_ROW_GROUP = 1_000_000
POLL_S = 0.05
RSS_TARGET_MB = 300.0


def _rows(n: int, rng: np.random.Generator, mixing: NDArray) -> NDArray[np.float32]:
    z = rng.normal(size=(n, mixing.shape[0]))
    return (z @ mixing + 0.1 * rng.normal(size=(n, N_FEATURES))).astype(np.float32)


def write_csv(path: Path, target_bytes: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).normal(size=(3, N_FEATURES))
    n_rows = 0
    with path.open("w") as f:
        f.write(",".join(NAMES) + "\n")
        while f.tell() < target_bytes:
            block = _rows(WRITE_BLOCK_ROWS, rng, mixing)
            left = target_bytes - f.tell()
            if left < 150 * WRITE_BLOCK_ROWS:  # about 150 bytes a row: cut the last block
                block = block[: max(1, left // 150)]
            np.savetxt(f, block, fmt="%.9g", delimiter=",")
            n_rows += block.shape[0]
    return n_rows


def write_parquet(path: Path, n_rows: int, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).normal(size=(3, N_FEATURES))
    schema = pa.schema([(n, pa.float32()) for n in NAMES])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n_rows, PARQUET_ROW_GROUP):
            block = _rows(min(PARQUET_ROW_GROUP, n_rows - start), rng, mixing)
            writer.write_table(pa.table({n: block[:, i] for i, n in enumerate(NAMES)},
                                        schema=schema))


def train_model(work: Path, epochs: int) -> Path:
    data = work / "train.csv"
    write_csv(data, 400_000, seed=1)  # a few thousand rows
    run, repo = work / "run", work / "repo"
    cli = [sys.executable, "-m", "latentwatch", "--log-level", "WARNING"]
    subprocess.run([*cli, "train", "--data", str(data), "--model", "vae", "--out", str(run),
                    "--epochs", str(epochs), "--seed", "0"], check=True)
    subprocess.run([*cli, "export", str(run), "--repo", str(repo), "--name", "table-vae"],
                   check=True)
    return repo


def score_file(
    target: str, data: Path, out: Path, batch_rows: int, fdr: float | None
) -> dict[str, Any]:
    import psutil

    argv = [sys.executable, "-m", "latentwatch", "--log-level", "WARNING", "score",
            "--server", target, "--model", "table-vae", "--data", str(data), "--out", str(out),
            "--batch-rows", str(batch_rows), *(["--fdr", str(fdr)] if fdr else [])]
    start_s = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(process.pid)
    peak_rss, cpu_s = 0, 0.0
    while process.poll() is None:
        try:
            peak_rss = max(peak_rss, watched.memory_info().rss)
            times = watched.cpu_times()
            cpu_s = times.user + times.system
        except psutil.NoSuchProcess:
            break
        time.sleep(POLL_S)
    stdout, stderr = process.communicate()
    elapsed_s = time.perf_counter() - start_s
    if process.returncode != 0:
        raise RuntimeError(f"score failed ({process.returncode}): {stderr[-2000:]}")
    with out.open() as f:
        n_rows = sum(1 for _ in f) - 1
    return {
        "file": data.name,
        "fdr": fdr,
        "file_mb": data.stat().st_size / 1e6,
        "rows": n_rows,
        "seconds": elapsed_s,
        "rows_per_s": n_rows / elapsed_s,
        "peak_rss_mb": peak_rss / 1e6,
        "client_cpu_s": cpu_s,  # the rest of the time the client waits for the server
        "under_target": peak_rss / 1e6 < RSS_TARGET_MB,
        "summary": stdout.strip().splitlines(),
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'file':<16} {'MB':>8} {'rows':>11} {'s':>8} {'rows/s':>9} {'peak RSS MB':>12} "
             f"{'client CPU s':>12}"]
    for r in results:
        lines.append(f"{r['file']:<16} {r['file_mb']:>8.1f} {r['rows']:>11d} {r['seconds']:>8.1f} "
                     f"{r['rows_per_s']:>9.0f} {r['peak_rss_mb']:>12.1f} "
                     f"{r['client_cpu_s']:>12.1f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="results to write")
    parser.add_argument("--csv-mb", type=float, default=2048.0, help="CSV size to write")
    parser.add_argument("--parquet-rows", type=int, default=10_000_000)
    parser.add_argument("--batch-rows", type=int, default=4096, help="rows per request")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fdr", type=float, default=None,
                        help="also --fdr (keeps 8 bytes of p-value per row in the client)")
    parser.add_argument("--threads", type=int, default=1, help="server intra-op threads")
    parser.add_argument("--quick", action="store_true", help="1 MB and 20k rows: a smoke test")
    parser.add_argument("--work-dir", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.quick:
        args.csv_mb, args.parquet_rows, args.epochs = 1.0, 20_000, 2
    with tempfile.TemporaryDirectory(prefix="latentwatch-large-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        logger.info("training and exporting the model")
        repo = train_model(work, args.epochs)
        logger.info("writing a %.0f MB CSV", args.csv_mb)
        write_csv(work / "large.csv", int(args.csv_mb * 1e6), seed=2)
        logger.info("writing a %d-row Parquet file", args.parquet_rows)
        write_parquet(work / "large.parquet", args.parquet_rows, seed=3)
        server, target, _ = start_latentwatch(repo, work / "server.log", args.threads)
        with server:
            results = []
            for name in ("large.csv", "large.parquet"):
                logger.info("scoring %s", name)
                results.append(score_file(target, work / name, work / f"{name}.scores.csv",
                                          args.batch_rows, args.fdr))
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rss_target_mb": RSS_TARGET_MB, "results": results},
                                    indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
