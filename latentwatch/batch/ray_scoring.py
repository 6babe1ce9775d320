"""Score a Ray Data dataset: `map_batches` over the exported model, or through a running service.

    import ray
    from latentwatch.batch.ray_scoring import score_dataset

    ds = ray.data.read_parquet("events/")  # an `id` column and the model's feature columns
    scored = score_dataset(ds, "model_repository", "payments", workers=2)
    scored.write_parquet("scored/")  # every input column, plus score, p_value, ...

Offline (`repo`), each worker is a Ray actor that loads the version once (service/offline.py:
the same verified files, graphs and ScoringPipeline as the server, so the same numbers) and
scores its blocks; no server runs. With `server="host:port"` each worker holds a
LatentwatchClient and sends its blocks to Score instead.

Each output block is the input block with these columns added: `score` (the score kind asked
for, default the model's), `p_value`, `outlier_probability`, `is_outlier` (p <= alpha), one
column per extra kind in `kinds`, and with `fdr` `fdr_outlier`. Rows keep their other columns
(ids, labels), so they need not stay in order; set Ray's `DataContext.execution_options.
preserve_order` for the input order. The result is lazy: a bad row (NaN, the wrong width)
fails when the dataset runs, as Ray's UserCodeException whose causes hold the InvalidInput
(run it inside `with latentwatch.batch.running.running(scored):` to get the InvalidInput
itself).

Benjamini-Hochberg needs every p-value of the dataset, so `fdr` takes a second pass: the
scored dataset is materialized (held in Ray's object store), each block sends its distinct
p-values and their counts (at most calibration size + 1 of them) to the driver, which finds
the exact threshold (latentwatch.scoring.conformal.bh_threshold), and a last cheap map flags
the rows at or below it. The decision equals one BH over all rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray.data
from numpy.typing import NDArray

from latentwatch.batch.columns import (
    Features,
    batch_rows,
    check_new_columns,
    feature_columns,
)
from latentwatch.batch.running import running
from latentwatch.client.frames import feature_names
from latentwatch.errors import InvalidInput
from latentwatch.export.recalibrate import source_version  # torch-free
from latentwatch.repository.reader import read_version
from latentwatch.scoring.conformal import bh_threshold, check_alpha, check_fdr
from latentwatch.scoring.contract import check_finite_scores
from latentwatch.scoring.results import ScoreResult

log = logging.getLogger(__name__)

RESULT_COLUMNS = ("score", "p_value", "outlier_probability", "is_outlier")
FDR_COLUMN = "fdr_outlier"
DEFAULT_BATCH_ROWS = 1024  # rows per map_batches call: one ONNX Runtime run (service/offline.py)
Batch = dict[str, NDArray]


@dataclass(frozen=True)
class ScoringPlan:
    """What every worker does, settled on the driver so that a bad argument fails there."""

    columns: tuple[str, ...]  # the feature columns, in the model's order
    kinds: tuple[str, ...]  # extra score kinds, each its own column
    score_kind: str  # "" for the model's default (a service resolves it)
    alpha: float | None  # None: the model's default (a service resolves it)


def result_columns(batch: Mapping[str, NDArray], result: ScoreResult) -> Batch:
    """The input batch with a result's columns added."""
    out = dict(batch)
    out.update(
        score=result.score, p_value=result.p_value,
        outlier_probability=result.outlier_probability, is_outlier=result.is_outlier,
    )
    out.update(result.scores)
    return out


class OfflineBatchScorer:
    """A Ray actor's scorer: loads the version once, then scores one numpy batch a call."""

    def __init__(self, directory: str, plan: ScoringPlan, intra_op_threads: int = 1) -> None:
        # Imported here: the driver needs no ONNX Runtime session, only the workers.
        from latentwatch.service.offline import OfflineScorer

        self.plan = plan
        self.scorer = OfflineScorer.from_version_dir(Path(directory), intra_op_threads)
        pipeline = self.scorer.pipeline
        self.kind = pipeline.resolve_score_kind(plan.score_kind)
        calibration = self.scorer.manifest.require_scoring().calibration
        self.alpha = check_alpha(
            calibration.default_alpha if plan.alpha is None else plan.alpha, calibration.size
        )

    def __call__(self, batch: Batch) -> Batch:
        rows = batch_rows(batch, self.plan.columns)
        scores = self.scorer.score(rows)  # kind -> (N,)
        check_finite_scores(scores)
        p = self.scorer.pipeline.p_values(self.kind, scores[self.kind])
        manifest = self.scorer.manifest
        result = ScoreResult(
            model_name=manifest.name, model_version=manifest.version, score_kind=self.kind,
            alpha=self.alpha, score=scores[self.kind], p_value=p, outlier_probability=1.0 - p,
            is_outlier=p <= self.alpha, scores={k: scores[k] for k in self.plan.kinds},
        )
        return result_columns(batch, result)


class ServiceBatchScorer:
    """A Ray actor's client of a running service: one channel, one Score call a batch."""

    def __init__(
        self, server: str, model: str, version: str, plan: ScoringPlan,
        client_options: Mapping[str, object] | None = None,
    ) -> None:
        from latentwatch.client import LatentwatchClient

        self.client = LatentwatchClient(server, **dict(client_options or {}))  # type: ignore[arg-type]
        self.model, self.version, self.plan = model, version, plan

    def __call__(self, batch: Batch) -> Batch:
        plan = self.plan
        result = self.client.score(
            self.model, batch_rows(batch, plan.columns), version=self.version, kinds=plan.kinds,
            alpha=plan.alpha, score_kind=plan.score_kind,
        )
        return result_columns(batch, result)


def score_dataset(
    ds: ray.data.Dataset,
    repo: Path | str | None,
    model: str,
    version: str = "",
    *,
    server: str | None = None,
    features: Features = None,
    kinds: Sequence[str] = (),
    score_kind: str = "",
    alpha: float | None = None,
    fdr: float | None = None,
    workers: int = 1,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    intra_op_threads: int = 1,
    worker_cpus: float | None = None,
    client_options: Mapping[str, object] | None = None,
) -> ray.data.Dataset:
    """The dataset with score, p_value, outlier_probability, is_outlier (and extra kinds,
    and `fdr_outlier` with `fdr`) added to each row; lazy unless `fdr` is given.

    Give `repo` to score offline, or `server` ("host:port") to score through a running
    service (`client_options`: LatentwatchClient's keyword arguments, e.g. tls_ca, token).
    `features` picks the feature columns (see latentwatch.batch.columns.feature_columns).
    `workers` Ray actors score at once, each with `intra_op_threads` ONNX Runtime threads,
    reserving `worker_cpus` CPUs each (default 1 offline, 0.5 through a service). Leave CPUs
    for Ray's read tasks: on a cluster of C CPUs, C workers of 1 CPU starve them and nothing
    moves (`workers=2, worker_cpus=0.5` on two CPUs).
    """
    if (repo is None) == (server is None):
        raise InvalidInput("give either repo (score offline) or server (through a service)")
    if workers < 1 or batch_rows < 1:
        raise InvalidInput(f"workers and batch_rows must be at least 1, got {workers}, "
                           f"{batch_rows}")
    level = None if fdr is None else check_fdr(fdr)
    schema = ds.schema()
    if schema is None:
        raise InvalidInput("the dataset has no rows")
    available = list(schema.names)
    added = [*RESULT_COLUMNS, *kinds, *([FDR_COLUMN] if level is not None else [])]
    check_new_columns(available, added)
    compute = ray.data.ActorPoolStrategy(size=workers)
    scorer: type[OfflineBatchScorer | ServiceBatchScorer]
    args: tuple[object, ...]
    if repo is not None:
        directory = source_version(Path(repo), model, version)
        files = read_version(directory.parent.name, directory.name, directory)
        pipeline = files.pipeline()
        plan = ScoringPlan(
            feature_columns(available, features, files.manifest.input.feature_names),
            pipeline.resolve_kinds(kinds), pipeline.resolve_score_kind(score_kind), alpha,
        )
        scorer, args = OfflineBatchScorer, (str(directory), plan, intra_op_threads)
        num_cpus = 1.0
    else:
        from latentwatch.client import LatentwatchClient

        assert server is not None
        with LatentwatchClient(server, **dict(client_options or {})) as client:  # type: ignore[arg-type]
            names = feature_names(client.get_model(model, version))
        plan = ScoringPlan(feature_columns(available, features, names), tuple(kinds),
                           score_kind, alpha)
        scorer, args = ServiceBatchScorer, (server, model, version, plan, client_options)
        num_cpus = 0.5  # a client waits on the server; leave CPUs to reading and the server
    scored = ds.map_batches(
        scorer, batch_size=batch_rows, batch_format="numpy", compute=compute,
        fn_constructor_args=args, num_cpus=num_cpus if worker_cpus is None else worker_cpus,
    )
    if level is None:
        return scored
    with running(scored):
        scored = scored.materialize()
    threshold = fdr_threshold(scored, level)
    log.info("Benjamini-Hochberg at %g over the dataset: threshold %s", level, threshold)
    return scored.map_batches(
        _flag_at, batch_format="numpy", fn_kwargs={"threshold": threshold},
    )


def fdr_threshold(scored: ray.data.Dataset, level: float) -> float | None:
    """Benjamini-Hochberg's p-value threshold at `level` over every row of a scored dataset
    (None when nothing is flagged); one pass of distinct p-values and their counts."""
    level = check_fdr(level)
    tallies = scored.select_columns(["p_value"]).map_batches(
        _distinct_p_values, batch_format="numpy", batch_size=None,
    )
    values, counts = [], []
    for batch in tallies.iter_batches(batch_format="numpy", batch_size=None):
        values.append(batch["p_value"])
        counts.append(batch["rows"])
    if not values:
        return None
    distinct, where = np.unique(np.concatenate(values), return_inverse=True)
    rows = np.bincount(where, weights=np.concatenate(counts)).astype(np.int64)
    return bh_threshold(distinct, rows, level)


def _distinct_p_values(batch: Batch) -> Batch:
    values, counts = np.unique(np.asarray(batch["p_value"], dtype=np.float64),
                               return_counts=True)
    return {"p_value": values, "rows": counts.astype(np.int64)}


def _flag_at(batch: Batch, threshold: float | None) -> Batch:
    p = np.asarray(batch["p_value"])
    flagged = np.zeros(p.shape[0], dtype=bool) if threshold is None else p <= threshold
    return {**batch, FDR_COLUMN: flagged}
