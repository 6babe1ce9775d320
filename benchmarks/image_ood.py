"""Images out of distribution: the old and the complexity-corrected image plans, side by side.

    python benchmarks/image_ood.py --images-dir DIR --json benchmarks/results/image_ood.json
        [--work DIR] [--seeds N] [--first-seed N] [--inliers A,B] [--epochs N]
        [--n-test N] [--k-values 1,4,16] | --json OUT --merge A.json B.json ...

For each seed and each inlier set (Fashion-MNIST, MNIST): a VAE trained on the set's training
images as `latentwatch train` trains it (conv body, Bernoulli decoder, its own calibration and
validation split; only --epochs is given, see below), exported as a user exports it. Two
directions per inlier: its test images (label 0) against the other set's test images, and
against uniform noise (8-bit pixels drawn uniformly, label 1).

Reported per direction, AUROC of:
- `served_default`: the exported version's default kind, scored offline by the normal pipeline;
- each plan in PLANS, a second stage fitted here as export fits one (scorer outputs of at most
  4,096 of the run's validation rows, drawn here, give the standardisation and the complexity
  slope), so the old default and the new plan are compared on the same trained model;
- the scorer's own kinds (neg_elbo, iwae_nll, recon_error, ...), for reference.

Every choice was fixed before these pairs were scored: the complexity statistic, its compressor
and its weight are described in latentwatch/scoring/complexity.py (the weight is fitted on the
run's normal validation rows). Trained runs are cached under --work (git-ignored `runs/`), so a
rerun only exports and scores. --epochs: 10 by default, as benchmarks/quality.py trains its
image runs (the 30 epochs of `latentwatch train` take about an hour per model on two shared
cores).

--k-values: K, the fixed latent draws the exported scorer decodes (neg_elbo, iwae_nll and
what is built on them need them; recon_error decodes z = mu once). Without it each run is
exported once at its own K (16 by default) and the figures keep the shape above. With it each
trained run is exported once per K (as `<inlier>-s<seed>-k<K>`) and every direction, and the
model entry, hold one entry per K ("k1", "k4", ...), so the K are compared on one trained
model. The model entry gives each K's cost: the export seconds and the scorer's in-process
rows/s (ONNX Runtime `run`, batches of 256 rows, one thread; the K are timed in interleaved
rounds, the median kept, since the machine is shared). benchmarks/results/image_k.json:

    nice -n 10 python benchmarks/image_ood.py --images-dir IMAGES_DIR --work runs/image_k10 \
        --epochs 10 --k-values 1,2,4,16 --json benchmarks/results/image_k.json

benchmarks/results/image_k-e3.json: the same at --epochs 3, one process per inlier, --merge'd
(its costs were timed while other runs trained: read only its AUROCs).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))
from in_process import raw_ort  # noqa: E402
from quality_metrics import detection_metrics  # noqa: E402

INLIERS = ("fashion-mnist", "mnist")
TRAIN_FILE = "train-images-idx3-ubyte.gz"
TEST_FILE = "t10k-images-idx3-ubyte.gz"
# name -> (statistics, combine): the image plans compared (see latentwatch.families).
PLANS: dict[str, tuple[tuple[str, ...], str]] = {
    "old_default": (("neg_elbo", "log_recon_error"), "max"),
    "complexity_plan": (("complexity_nll", "log_recon_error"), "max"),
    "complexity_nll_alone": (("complexity_nll",), "max"),
}
PIXEL_MAX = 255
DEFAULT_EPOCHS = 10
DEFAULT_N_TEST = 3000
# The scorer's cost per K: batches of this many rows, timed in this many interleaved rounds.
COST_BATCH_ROWS = 256
COST_ROUNDS = 3
COST_WARMUP_S = 1.0
COST_DURATION_S = 3.0

logger = logging.getLogger("image_ood")


def _train(data: Path, run_dir: Path, seed: int, epochs: int) -> dict[str, Any]:
    from latentwatch.models.run_dir import CHECKPOINT_FILE
    from latentwatch.models.training import TrainConfig, run_training

    # What training measured, kept beside the run so a rerun that reuses it still reports it.
    sidecar = run_dir.with_name(run_dir.name + ".training.json")
    if (run_dir / CHECKPOINT_FILE).exists():
        logger.info("reusing the trained run %s", run_dir)
        saved = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        return {**saved, "reused": True}
    start_s = time.perf_counter()
    result = run_training(TrainConfig(data=str(data), model="vae", out=run_dir, seed=seed,
                                      epochs=epochs, progress=False))
    measured = {"epochs": epochs, "train_s": time.perf_counter() - start_s,
                "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, **result.split}
    sidecar.write_text(json.dumps(measured, indent=2, default=float) + "\n")
    return {**measured, "reused": False}


def _test_rows(images_dir: Path, inlier: str, n_test: int, seed: int) -> dict[str, NDArray]:
    from latentwatch.data import load_source

    rng = np.random.default_rng(seed)
    rows = {}
    for name in INLIERS:
        X = load_source(str(images_dir / name / TEST_FILE)).X.astype(np.float32)
        rows[name] = X[np.sort(rng.choice(len(X), min(n_test, len(X)), replace=False))]
    rows["noise"] = rng.integers(0, PIXEL_MAX + 1, size=(n_test, rows[inlier].shape[1])
                                 ).astype(np.float32)
    return rows


def _plan_stages(version_dir: Path, run_dir: Path, scorer: Any, seed: int) -> dict[str, Any]:
    """Each plan's second stage, fitted as export fits one: on (at most MAX_FIT_ROWS of) the
    run's validation rows, through the exported scorer."""
    from latentwatch.export.run_inputs import load_run
    from latentwatch.scoring.second_stage import MAX_REFERENCE_ROWS, fit_second_stage

    inputs = load_run(run_dir)
    assert inputs.validation_rows is not None
    fit = inputs.validation_rows
    rng = np.random.default_rng(seed)
    if len(fit) > MAX_REFERENCE_ROWS:
        fit = fit[np.sort(rng.choice(len(fit), MAX_REFERENCE_ROWS, replace=False))]
    outputs = scorer.score(fit)  # every kind: the graph's outputs of the same names
    model_rows = inputs.preprocessing.apply(fit)
    return {plan: fit_second_stage(statistics, combine, 5, outputs, model_rows, outputs,
                                   model_rows)
            for plan, (statistics, combine) in PLANS.items()}


def _export_and_score(run_dir: Path, repo: Path, name: str, k: int | None, seed: int,
                      inlier: str, rows: dict[str, NDArray]) -> tuple[dict[str, Any], Path]:
    """One export of the run (at K draws, or the run's own K when None), every direction's
    AUROCs through it, and what the export chose: ({direction: aurocs, "model": ...}, version)."""
    from latentwatch.export.exporter import export_run
    from latentwatch.repository.manifest import Manifest
    from latentwatch.service.offline import OfflineScorer

    start_s = time.perf_counter()
    version_dir = export_run(run_dir, repo, name, n_importance_samples=k)
    export_s = time.perf_counter() - start_s
    scoring = Manifest.read(version_dir).require_scoring()
    default = scoring.default_score_kind
    scorer = OfflineScorer.from_version_dir(version_dir, intra_op_threads=1)
    stages = _plan_stages(version_dir, run_dir, scorer, seed)
    scores: dict[str, dict[str, NDArray[np.float64]]] = {}
    for set_name, X in rows.items():
        kinds = scorer.score(X)  # the served pipeline: every kind, the default among them
        model_rows = scorer.manifest.input.preprocessing.apply(X)
        scores[set_name] = {**{k: v for k, v in kinds.items() if k != "stats_density"},
                            "served_default": kinds[default],
                            **{plan: stage.score(kinds, model_rows)
                               for plan, stage in stages.items()}}
    out: dict[str, Any] = {}
    for outlier in (o for o in rows if o != inlier):
        y = np.r_[np.zeros(len(rows[inlier]), np.int64), np.ones(len(rows[outlier]), np.int64)]
        aurocs = {kind: detection_metrics(y, np.r_[scores[inlier][kind],
                                                   scores[outlier][kind]])["auroc"]
                  for kind in scores[inlier]}
        out[f"{inlier}->{outlier}"] = aurocs
        logger.info("seed %d %s K=%s %s->%s: %s", seed, name, k or "run's", inlier, outlier,
                    " ".join(f"{kind} {v:.4f}" for kind, v in aurocs.items()))
    out["model"] = {
        "export_s": export_s, "default_kind": default,
        "default_score_reason": scoring.default_score_reason,
        "second_stage": (scoring.second_stage.model_dump()
                         if scoring.second_stage is not None else None),
        "complexity_slope": {p: s.complexity_slope for p, s in stages.items()},
    }
    return out, version_dir


def _scorer_cost(versions: dict[str, Path], X: NDArray[np.float32]) -> dict[str, dict]:
    """Each version's in-process scorer rows/s, timed in interleaved rounds (median kept)."""
    rounds: dict[str, list[float]] = {label: [] for label in versions}
    X = np.tile(X, (-(-COST_BATCH_ROWS // len(X)), 1))  # at least one batch of rows
    for _ in range(COST_ROUNDS):
        for label, version_dir in versions.items():
            row = raw_ort(version_dir, X, COST_BATCH_ROWS, 1, COST_WARMUP_S, COST_DURATION_S)
            rounds[label].append(row["rows_per_s"])
    return {label: {"scorer_rows_per_s": float(np.median(r)), "scorer_rows_per_s_rounds": r,
                    "batch_rows": COST_BATCH_ROWS, "intra_op_threads": 1}
            for label, r in rounds.items()}


def run_inlier(images_dir: Path, work: Path, inlier: str, seed: int, epochs: int,
               n_test: int, k_values: list[int] | None = None) -> dict[str, Any]:
    """Train (or reuse) the inlier's run, export it (once per K in k_values, else once at its
    own K) and score every direction; see the module docstring for the shape."""
    run_dir = work / f"run-{inlier}-s{seed}"
    training = _train(images_dir / inlier / TRAIN_FILE, run_dir, seed, epochs)
    rows = _test_rows(images_dir, inlier, n_test, seed)
    name = f"{inlier}-s{seed}"
    if k_values is None:
        result, _ = _export_and_score(run_dir, work / "repo", name, None, seed, inlier, rows)
        model = result.pop("model")
        return {**result, f"{inlier}:model": {"training": training, **model}}
    from latentwatch.export.run_inputs import load_run

    out: dict[str, Any] = {}
    models: dict[str, Any] = {"training": training,
                              "run_n_importance_samples": load_run(run_dir).n_importance_samples}
    versions: dict[str, Path] = {}
    for k in k_values:
        result, versions[f"k{k}"] = _export_and_score(run_dir, work / "repo", f"{name}-k{k}", k,
                                                      seed, inlier, rows)
        models[f"k{k}"] = result.pop("model")
        for direction, aurocs in result.items():
            out.setdefault(direction, {})[f"k{k}"] = aurocs
    for label, cost in _scorer_cost(versions, rows[inlier]).items():
        models[label] |= cost
    return {**out, f"{inlier}:model": models}


def _mean_leaves(values: list[Any]) -> Any:
    """The mean of each number over `values` (equally nested dicts, or numbers)."""
    if isinstance(values[0], dict):
        return {k: _mean_leaves([v[k] for v in values if k in v]) for k in values[0]}
    return float(np.mean(values))


def _summary(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """direction -> score name -> mean AUROC over the seeds that ran it (with --k-values:
    direction -> "k<K>" -> score name -> mean AUROC)."""
    directions = sorted({d for r in per_seed.values() for d in r if "->" in d})
    return {d: _mean_leaves([r[d] for r in per_seed.values() if d in r]) for d in directions}


def _cost_summary(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """inlier -> "k<K>" -> mean export_s and scorer rows/s over the seeds (with --k-values)."""
    costs: dict[str, dict[str, list[dict[str, float]]]] = {}
    for result in per_seed.values():
        for key, model in result.items():
            for label, entry in model.items() if key.endswith(":model") else ():
                if isinstance(entry, dict) and "scorer_rows_per_s" in entry:
                    costs.setdefault(key.removesuffix(":model"), {}).setdefault(label, []).append(
                        {"export_s": entry["export_s"],
                         "scorer_rows_per_s": entry["scorer_rows_per_s"]})
    return {inlier: {label: _mean_leaves(v) for label, v in by_k.items()}
            for inlier, by_k in costs.items()}


def _k_values(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = sorted({int(v) for v in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--k-values takes integers like 1,4,16, got {text!r}") from None
    if values[0] < 1:
        raise argparse.ArgumentTypeError(f"--k-values must all be >= 1, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images-dir", type=Path, help="folder with fashion-mnist/ and mnist/ "
                        "IDX files (required unless --merge)")
    parser.add_argument("--json", type=Path, required=True, help="where to write the figures")
    parser.add_argument("--work", type=Path, default=Path("runs/image_ood"),
                        help="trained runs and the model repository (default: runs/image_ood)")
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds (default: 1)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (default: 0)")
    parser.add_argument("--inliers", default=",".join(INLIERS),
                        help=f"inlier sets to train on (default: {','.join(INLIERS)})")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help=f"most training epochs (default: {DEFAULT_EPOCHS})")
    parser.add_argument("--n-test", type=int, default=DEFAULT_N_TEST,
                        help=f"test rows per set, drawn by the seed (default: {DEFAULT_N_TEST})")
    parser.add_argument("--k-values", type=_k_values, default=None,
                        help="export each run once per K latent draws, e.g. 1,4,16, and report "
                             "every direction per K (default: once, at the run's own K)")
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="instead of running: merge these JSON files of runs over other "
                             "inliers or seeds into --json (default: none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started_s = time.perf_counter()
    per_seed: dict[str, dict[str, Any]] = {}
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        for part in parts:
            for seed, result in part["per_seed"].items():
                per_seed.setdefault(seed, {}).update(result)
        settings = {**parts[0]["settings"], "merged": [p["command"] for p in parts]}
    else:
        if args.images_dir is None:
            parser.error("--images-dir is required unless --merge")
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            per_seed[str(seed)] = {}
            for inlier in args.inliers.split(","):
                per_seed[str(seed)] |= run_inlier(args.images_dir, args.work, inlier, seed,
                                                  args.epochs, args.n_test, args.k_values)
        settings = {"seeds": args.seeds, "first_seed": args.first_seed, "inliers": args.inliers,
                    "epochs": args.epochs, "n_test": args.n_test,
                    **({"k_values": args.k_values} if args.k_values is not None else {}),
                    "plans": {k: {"statistics": list(s), "combine": c}
                              for k, (s, c) in PLANS.items()}}
    mean = _summary(per_seed)
    report = {
        "command": " ".join(["python", "benchmarks/image_ood.py", *(argv or sys.argv[1:])]),
        "settings": settings,
        "seeds_run": sorted(per_seed, key=int),
        "targets": {"fashion-mnist->mnist": 0.995, "mnist->fashion-mnist": 0.999,
                    "noise": 0.999},
        "mean_auroc": mean,
        **({"cost_by_k": cost} if (cost := _cost_summary(per_seed)) else {}),
        "per_seed": per_seed,
        "platform": platform.platform(), "total_s": time.perf_counter() - started_s,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")
    for d, values in mean.items():
        for label, aurocs in (values.items() if "k_values" in settings else [("", values)]):
            print(f"{d:28s} {label:4s} " + " ".join(f"{k} {v:.4f}" for k, v in aurocs.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
