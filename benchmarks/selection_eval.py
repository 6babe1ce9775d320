"""The label-free choice of statistics (export/selection.py) against the fixed plan, on ADBench.

Per set and seed: the clean-train split of benchmarks/quality.py, one VAE trained as
`latentwatch train` trains by default, exported twice from the same run (choice off: the plan;
choice on), both default kinds scored on the test rows. Test labels serve this evaluation only:
the AUROC of each default, and of every candidate (with the standardisation the export fitted),
so the JSON also shows the best candidate in hindsight.

The 29 development sets are split into fixed halves by name: sorted case-insensitively without
the number prefix, taken alternately; the selection half (1st, 3rd, ...) is where the generators
and the margin may be tuned, the report half is where the figures are reported.

    python benchmarks/selection_eval.py --datasets Cardiotocography,shuttle --seeds 1
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_halves import dataset_name, split_halves  # noqa: E402
from quality_metrics import detection_metrics  # noqa: E402
from quality_split import clean_train_split, load_tabular  # noqa: E402

from latentwatch.export.selection import (  # noqa: E402
    DECIDING_GENERATORS,
    DEFAULT_MARGIN,
    GENERATORS,
)

logger = logging.getLogger("selection_eval")

DEFAULT_SETS = ("Cardiotocography", "shuttle", "WPBC", "landsat", "vertebral",
                "skin", "satellite", "annthyroid", "Waveform", "magic.gamma")
MAX_TRAIN_ROWS = 10_000
MAX_TEST_ROWS = 10_000


def set_name(path: Path) -> str:
    """"33_skin" -> "skin" (quality_halves.dataset_name)."""
    return dataset_name(path.stem)


def halves(names: list[str]) -> tuple[list[str], list[str]]:
    """(selection half, report half), by the quality benchmark's one rule (quality_halves)."""
    split = split_halves(names)
    return split["selection"], split["report"]


def evaluate(path: Path, seed: int, work: Path, epochs: int | None) -> dict[str, Any]:
    from latentwatch.export.exporter import export_run
    from latentwatch.export.selection import candidate_scores, candidates, stage_statistics
    from latentwatch.models.training import TrainConfig, run_training
    from latentwatch.repository.layout import SCORER_FILE, SECOND_STAGE_FILE
    from latentwatch.repository.manifest import Manifest
    from latentwatch.scoring.second_stage import SecondStage
    from latentwatch.service.offline import OfflineScorer

    X, y = load_tabular(path)
    split = clean_train_split(X, y, seed, MAX_TRAIN_ROWS, MAX_TEST_ROWS)
    run_dir = work / f"{path.stem}-{seed}"
    np.save(work / f"{path.stem}-{seed}.npy", split.pool, allow_pickle=False)
    optional = {"epochs": epochs} if epochs is not None else {}
    started_s = time.perf_counter()
    run_training(TrainConfig(data=str(work / f"{path.stem}-{seed}.npy"), model="vae",
                             out=run_dir, seed=seed, progress=False, **optional))
    train_s = time.perf_counter() - started_s
    entry: dict[str, Any] = {"seed": seed, **split.describe(), "train_s": train_s}
    for label, select in (("fixed", False), ("chosen", True)):
        started_s = time.perf_counter()
        version = export_run(run_dir, work / "repo", f"{path.stem}-{seed}-{label}",
                             select_statistics=select)
        export_s = time.perf_counter() - started_s
        scorer = OfflineScorer.from_version_dir(version)
        score = scorer.score(split.test)[scorer.default_score_kind]
        scoring = Manifest.read(version).require_scoring()
        entry[label] = {"auroc": detection_metrics(split.y_test, score)["auroc"],
                        "export_s": export_s}
        if select:
            assert scoring.selection is not None
            entry["selection"] = scoring.selection.model_dump(mode="json")
        else:  # every candidate on the test rows, from the plan's fitted stage
            assert scoring.second_stage is not None
            spec = scoring.second_stage
            stage = SecondStage.load(version / SECOND_STAGE_FILE, spec.statistics, spec.combine,
                                     spec.k)
            preprocessing = Manifest.read(version).input.preprocessing
            z = stage_statistics(version / SCORER_FILE, stage, preprocessing)(split.test)
            entry["test_auroc_by_candidate"] = {
                c.name: detection_metrics(split.y_test, candidate_scores(
                    z, stage.statistics, c))["auroc"]
                for c in candidates(stage.statistics, spec.combine)  # type: ignore[arg-type]
            }
    return entry


def rule_outcome(entry: dict[str, Any], generators: tuple[str, ...], margin: float) -> float:
    """Test AUROC of the candidate a rule (mean over `generators`, `margin`) picks; the fixed
    default's where the set had too few validation rows to choose."""
    evidence = entry["selection"]["candidates"]
    if not evidence:
        return float(entry["fixed"]["auroc"])
    means = {c["name"]: float(np.mean([c["auroc"][g] for g in generators])) for c in evidence}
    names = list(means)  # the plan first
    best = max(names, key=lambda n: means[n])
    chosen = best if means[best] > means[names[0]] + margin else names[0]
    return float(entry["test_auroc_by_candidate"][chosen])


# What-if rules over the recorded evidence (export makes every generator's outliers, so each is
# exact): deciding generators and margin. The export's default was picked among them on the
# selection half.
RULES: dict[str, tuple[tuple[str, ...], float]] = {
    "export default": (DECIDING_GENERATORS, DEFAULT_MARGIN),
    "first design, three": (("interpolation", "local_perturbation", "marginal_shuffle"),
                            DEFAULT_MARGIN),
    "interpolation+shuffle": (("interpolation", "marginal_shuffle"), DEFAULT_MARGIN),
    "neighbour_extrapolation": (("neighbour_extrapolation",), DEFAULT_MARGIN),
    "interpolation+neighbour": (("interpolation", "neighbour_extrapolation"), DEFAULT_MARGIN),
    "all four": (GENERATORS, DEFAULT_MARGIN),
    "interpolation, margin 0.03": (("interpolation",), 0.03),
}


def summarize(results: dict[str, list[dict[str, Any]]], report: set[str]) -> dict[str, Any]:
    def mean_of(names: list[str], key: str) -> float:
        values = [np.mean([s[key]["auroc"] for s in results[n]]) for n in names]
        return float(np.mean(values)) if values else float("nan")

    out: dict[str, Any] = {}
    for half, names in (("selection", [n for n in results if n not in report]),
                        ("report", [n for n in results if n in report]),
                        ("all", list(results))):
        if not names:
            continue
        out[half] = {"sets": names, "fixed": mean_of(names, "fixed"),
                     "chosen": mean_of(names, "chosen"),
                     "rules": {rule: float(np.mean([np.mean([rule_outcome(s, *how)
                                                             for s in results[n]])
                                                    for n in names])) if names else float("nan")
                               for rule, how in RULES.items()}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adbench", type=Path, default=Path(__file__).resolve().parents[2]
                        / "shared" / "data" / "adbench", help="folder of ADBench .npz files")
    parser.add_argument("--datasets", default=",".join(DEFAULT_SETS),
                        help="comma-separated set names (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per set (default: 1)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: TrainConfig's schedule)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results"
                        / "selection_eval.json", help="JSON written (default: %(default)s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    files = {set_name(p): p for p in sorted(args.adbench.glob("*.npz"))}
    selection_half, report_half = halves(list(files))
    wanted = [n.strip() for n in args.datasets.split(",") if n.strip()]
    missing = [n for n in wanted if n not in files]
    if missing:
        raise SystemExit(f"--datasets: not in {args.adbench}: {', '.join(missing)}")
    results: dict[str, list[dict[str, Any]]] = {}
    started_s = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in wanted:
            results[name] = []
            for seed in range(args.seeds):
                entry = evaluate(files[name], seed, Path(tmp), args.epochs)
                results[name].append(entry)
                chosen = entry["selection"]["chosen"]
                print(f"{name:18s} seed {seed}: fixed {entry['fixed']['auroc']:.4f} chosen "
                      f"{entry['chosen']['auroc']:.4f} ({chosen}) candidates "
                      + " ".join(f"{k}={v:.4f}" for k, v in
                                 entry["test_auroc_by_candidate"].items()), flush=True)
                summary = summarize(results, set(report_half))
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({
                    "command": " ".join(sys.argv), "seeds": args.seeds, "epochs": args.epochs,
                    "max_train_rows": MAX_TRAIN_ROWS, "max_test_rows": MAX_TEST_ROWS,
                    "selection_half": selection_half, "report_half": report_half,
                    "summary": summary, "datasets": results,
                    "elapsed_s": time.perf_counter() - started_s,
                }, indent=2, sort_keys=True) + "\n")
    for half, row in summary.items():
        print(f"{half:9s} ({len(row['sets'])} sets): fixed {row['fixed']:.4f} "
              f"chosen {row['chosen']:.4f} | " + " ".join(
                  f"{rule}={value:.4f}" for rule, value in row["rules"].items()))


if __name__ == "__main__":
    main()
