"""K and the kNN reference's size R for the tabular default, chosen on the selection half.

    python benchmarks/k_study.py --adbench-dir DIR --json out.json [--datasets A,B]
        [--skip-datasets A,B] [--seeds N] [--ks 1,2,4,16] [--reference-rows 1024,2048,4096]
        [--max-train-rows N] [--max-test-rows N] [--epochs N] [--threads N] [--rounds N]
        [--quick]

K is the number of fixed latent draws the exported VAE scorer decodes per row (the statistics
that need draws: neg_elbo, iwae_nll, ...); R the training rows the default kind's kNN statistic
searches. Both are scoring choices, made at export, so each set and seed trains latentwatch's
default VAE once, on the clean-train pool (quality_split; the caps of benchmarks/quality.py), and
exports it at every K in --ks (R: the default, reference_rows_for) and, at K=1, at every R in
--reference-rows below the training rows available (R equal to the default is the K=1 export
itself). Every export keeps the label-free selection of the second stage's statistics on, as a
user's export does. Only the selection half of the sets (quality_halves) is run: choices are
made there.

Recorded per export: the default kind's AUROC and AUPR on the test split (and every kind's,
neg_elbo's among them), the statistics the selection chose, K and R as the manifest states them,
the export's seconds, and its cost (k_study_cost.py): in-process rows/s of the scorer graph and
of the default kind, and their ratio. The summary gives, per export, the mean over sets (each set
the mean of its seeds), the mean difference to the reference export (K=16 at the default R; for
the R exports also to K=1 at the default R) with a Wilcoxon signed-rank p over the sets, and the
mean cost figures. The JSON is rewritten after every set and seed (`partial` until the end).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from k_study_cost import MIN_MEASURE_S, ROUNDS, cost_protocol, measure_costs
from k_study_summary import config_key, summarize, summary_lines
from quality_latentwatch import exported_scores, train_latentwatch
from quality_metrics import detection_metrics
from quality_report import json_safe, package_versions, role_command
from quality_settings import DEFAULT_MAX_TEST_ROWS, DEFAULT_MAX_TRAIN_ROWS, QUICK
from quality_split import clean_train_split, load_tabular
from quality_tabular import tabular_files
from throughput_report import machine

from latentwatch.repository.manifest import Manifest
from latentwatch.scoring.second_stage import reference_rows_for

logger = logging.getLogger("k_study")

HALF = "selection"
DEFAULT_KS = (1, 2, 4, 16)
DEFAULT_REFERENCE_ROWS = (1024, 2048, 4096)
DEFAULT_SEEDS = 2
DEFAULT_THREADS = 1


@dataclass(frozen=True)
class StudySettings:
    seeds: tuple[int, ...]
    ks: tuple[int, ...]
    reference_rows: tuple[int, ...]
    max_train_rows: int | None
    max_test_rows: int | None
    epochs: int | None
    threads: int
    rounds: int
    min_measure_s: float

    def describe(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "ks": list(self.ks),
                "reference_rows": list(self.reference_rows),
                "max_train_rows": self.max_train_rows, "max_test_rows": self.max_test_rows,
                "epochs": self.epochs, "threads": self.threads, "rounds": self.rounds,
                "min_measure_s": self.min_measure_s}


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SystemExit(f"{flag}: comma list of integers expected, got {text!r}") from None
    if not values or min(values) < 1:
        raise SystemExit(f"{flag}: integers >= 1 expected, got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, StudySettings]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adbench-dir", type=Path, required=True,
                        help="directory of .npz files with keys X, y (its selection half runs)")
    parser.add_argument("--json", type=Path, required=True, help="file to write the figures to")
    parser.add_argument("--datasets", default=None, help="comma list of selection-half sets")
    parser.add_argument("--skip-datasets", default="",
                        help="comma list of sets left out (e.g. the largest, for time)")
    parser.add_argument("--seeds", type=int, default=None,
                        help=f"seeds 0..N-1 (default {DEFAULT_SEEDS})")
    parser.add_argument("--ks", default=",".join(map(str, DEFAULT_KS)),
                        help="K values exported at the default R (default %(default)s)")
    parser.add_argument("--reference-rows", default=",".join(map(str, DEFAULT_REFERENCE_ROWS)),
                        help="R values exported at K=1 (default %(default)s)")
    parser.add_argument("--max-train-rows", type=int, default=None,
                        help=f"cap on the pool, 0 = none (default {DEFAULT_MAX_TRAIN_ROWS})")
    parser.add_argument("--max-test-rows", type=int, default=None,
                        help=f"cap on the test set, 0 = none (default {DEFAULT_MAX_TEST_ROWS})")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs at most (default `latentwatch train`'s)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="ONNX Runtime threads for the cost figures (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"interleaved cost rounds (default {ROUNDS})")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: the 3 smallest sets, 1 seed, 1 epoch, small caps")
    args = parser.parse_args(argv)

    def pick(flag: Any, quick_value: Any, default: Any) -> Any:
        return flag if flag is not None else (quick_value if args.quick else default)

    seeds = pick(args.seeds, 1, DEFAULT_SEEDS)
    if seeds < 1 or args.threads < 1:
        raise SystemExit("--seeds and --threads must be >= 1")
    train_cap = pick(args.max_train_rows, QUICK["max_train_rows"], DEFAULT_MAX_TRAIN_ROWS)
    test_cap = pick(args.max_test_rows, QUICK["max_test_rows"], DEFAULT_MAX_TEST_ROWS)
    settings = StudySettings(
        seeds=tuple(range(seeds)), ks=_ints(args.ks, "--ks"),
        reference_rows=_ints(args.reference_rows, "--reference-rows"),
        max_train_rows=train_cap or None, max_test_rows=test_cap or None,
        epochs=pick(args.epochs, 1, None), threads=args.threads,
        rounds=pick(args.rounds, 2, ROUNDS), min_measure_s=0.1 if args.quick else MIN_MEASURE_S,
    )
    return args, settings


def exports_of(settings: StudySettings, n_features: int, n_train: int
               ) -> list[tuple[int, int | None]]:
    """(K, R) of every export of one trained run; R None = the default (reference_rows_for).
    R values at or above the training rows, or equal to the default, are left out."""
    default_r = reference_rows_for(n_features)
    plans: list[tuple[int, int | None]] = [(k, None) for k in settings.ks]
    plans += [(1, r) for r in settings.reference_rows if r < n_train and r != default_r]
    return plans


def _export_entry(version_dir: Path, k: int, r: int | None, y: np.ndarray,
                  scores: dict[str, np.ndarray], default_kind: str, export_s: float
                  ) -> dict[str, Any]:
    manifest = Manifest.read(version_dir)
    scoring = manifest.require_scoring()
    stage, selection = scoring.second_stage, scoring.selection
    kinds = {kind: detection_metrics(y, s) for kind, s in scores.items()}
    return {
        "n_importance_samples": k, "n_reference_rows_asked": r,
        "manifest": {
            "n_importance_samples": manifest.latent.n_importance_samples
            if manifest.latent is not None else None,
            "default_score_kind": scoring.default_score_kind,
            "second_stage": None if stage is None else {
                "statistics": list(stage.statistics), "combine": stage.combine, "k": stage.k,
                "n_reference_rows": stage.n_reference_rows},
            "selection": None if selection is None else {
                "chosen": selection.chosen, "default": selection.default,
                "skipped": selection.skipped},
        },
        "default_kind": default_kind, "default": kinds[default_kind], "kinds": kinds,
        "export_s": export_s,
    }


def run_set_seed(X: np.ndarray, y: np.ndarray, seed: int, settings: StudySettings, work: Path,
                 name: str) -> dict[str, Any]:
    """One set, one seed: split, train once, every export scored and costed."""
    split = clean_train_split(X, y, seed, settings.max_train_rows, settings.max_test_rows)
    seed_dir = work / f"{name}-seed{seed}"
    seed_dir.mkdir(parents=True)
    pool_path = seed_dir / "pool.npy"
    np.save(pool_path, split.pool, allow_pickle=False)
    run = train_latentwatch(str(pool_path), seed_dir, "kstudy", seed, settings.epochs)
    entry: dict[str, Any] = {"seed": seed, **split.describe(), "training": run.training,
                             "train_s": run.train_s, "default_reference_rows":
                             reference_rows_for(X.shape[1]), "exports": {}}
    versions: dict[str, Path] = {}
    for k, r in exports_of(settings, X.shape[1], run.training["n_train"]):
        key = config_key(k, r)
        lw = exported_scores(run, split.test, seed_dir / "repo", "kstudy",
                             n_importance_samples=k, n_reference_rows=r)
        entry["exports"][key] = _export_entry(lw.version_dir, k, r, split.y_test, lw.scores,
                                              lw.default_kind, lw.export_s)
        versions[key] = lw.version_dir
    costs = measure_costs(versions, split.test, settings.threads, settings.rounds,
                          settings.min_measure_s)
    for key, cost in costs.items():
        entry["exports"][key]["cost"] = cost
    return entry


def _progress(name: str, entry: dict[str, Any]) -> str:
    parts = [f"{key} {e['default']['auroc']:.4f} ({e['cost']['graph_rows_per_cpu_s']:,.0f} graph "
             f"rows/CPU s, x{e['cost']['default_over_graph_cpu']:.2f})"
             for key, e in entry["exports"].items()]
    return (f"{name} seed {entry['seed']}: pool {entry['n_pool']} test {entry['n_test']} "
            f"train {entry['train_s']:.0f}s; " + "; ".join(parts))


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    wanted = args.datasets.split(",") if args.datasets else None
    files = tabular_files(args.adbench_dir, wanted, args.quick, HALF)
    skipped = {s.strip().removesuffix(".npz") for s in args.skip_datasets.split(",") if s.strip()}
    left_out = [f.stem for f in files if f.stem in skipped or f.stem.split("_", 1)[-1] in skipped]
    files = [f for f in files if f.stem not in left_out]
    if not files:
        raise SystemExit("no sets left to run")
    started_s = time.perf_counter()
    report: dict[str, Any] = {
        "command": role_command("benchmarks/k_study.py",
                                argv if argv is not None else sys.argv[1:]),
        "half": HALF,
        "settings": settings.describe(),
        "protocol": {
            "split": "clean-train (benchmarks/quality.py): per seed, half the normals -> pool, "
                     "the rest + all anomalies -> test; caps as settings",
            "training": "latentwatch's default VAE trained once per set and seed on the pool "
                        "(`latentwatch train` defaults, its own calibration/validation slices)",
            "exports": "the trained run exported at each K (default R) and at K=1 at each R "
                       "below the training rows; label-free statistic selection on",
            "cost": cost_protocol(settings.threads, settings.rounds, settings.min_measure_s),
        },
        "datasets_left_out": left_out,
        "machine": machine(settings.threads),
        "datasets": {},
    }
    datasets: dict[str, dict[str, Any]] = report["datasets"]
    print(f"k study ({HALF} half): {len(files)} sets x {len(settings.seeds)} seeds; "
          f"left out: {left_out or 'none'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="latentwatch-kstudy-") as tmp:
        for seed in settings.seeds:
            for path in files:
                X, y = load_tabular(path)
                try:
                    entry = run_set_seed(X, y, seed, settings, Path(tmp), path.stem)
                except Exception as err:  # recorded: one failed set must not end a long run
                    logger.exception("%s seed %d failed", path.stem, seed)
                    entry = {"seed": seed, "error": f"{type(err).__name__}: {err}"}
                else:
                    print(_progress(path.stem, entry), flush=True)
                d = datasets.setdefault(path.stem, {
                    "n_rows": int(X.shape[0]), "n_features": int(X.shape[1]),
                    "n_anomalies": int((y != 0).sum()), "seeds": []})
                d["seeds"].append(entry)
                _write({**report, "summary": summarize(datasets, settings.ks), "partial": True,
                        "total_s": time.perf_counter() - started_s}, args.json)
    report["summary"] = summarize(datasets, settings.ks)
    report["versions"] = package_versions()
    report["total_s"] = time.perf_counter() - started_s
    _write(report, args.json)
    for line in summary_lines(report["summary"]):
        print(line)
    print(f"wrote {args.json}; total {report['total_s']:.0f} s")
    return 0


def _write(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
