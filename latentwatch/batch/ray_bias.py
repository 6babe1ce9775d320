"""A bias report over a Ray Data dataset: encode on the workers, accumulate on the driver.

    from latentwatch.batch.ray_bias import bias_report_dataset

    report = bias_report_dataset(ray.data.read_parquet("scans/"), "model_repository",
                                 "digits-vae", id_column="id", group_columns=["site"])

Map: each worker (a Ray actor holding the version's encoder graph on ONNX Runtime) checks its
blocks' rows as BiasReport checks them and encodes them; a block becomes its latent means
(n, Z), log-variances, ids and group labels. Reduce: the driver takes the blocks in input order
(Ray's preserve_order, for this call only: latentwatch.batch.running) into one BiasAccumulator
and finishes it, exactly as the service does with the chunks of a BiasReport stream, and
decodes the sparsest and densest latent means when the version has a decoder graph.

Why the means travel to the driver rather than per-block histograms: the histograms span the
data's own range, known only once every block is seen; the k-NN density compares every row with
a sample of all rows by position; and the report itself holds per-row densities and weights.
The means are Z float32s a row (16 MB for 1M rows of Z = 4), the size of what the server holds
for the same report, and the encoding (the costly part) is what the workers share. The result
is the RPC's: the same accumulator and finish on the same means (tests/batch compares them).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import ray.data
from numpy.typing import NDArray

from latentwatch.batch.columns import Features, batch_rows, feature_columns
from latentwatch.batch.running import running
from latentwatch.bias.accumulator import BiasAccumulator, BiasReport
from latentwatch.bias.groups import LabelLimits
from latentwatch.bias.options import BiasOptions
from latentwatch.errors import InvalidInput, quote
from latentwatch.export.recalibrate import source_version  # torch-free
from latentwatch.repository.manifest import Manifest
from latentwatch.repository.reader import read_version
from latentwatch.scoring.contract import InputContract, validate_rows

DEFAULT_BATCH_ROWS = 1024  # rows per encoder run
MU, LOGVAR, IDS = "latent_mu", "latent_logvar", "row_id"
Batch = dict[str, NDArray]


def _group_key(index: int) -> str:
    return f"group_{index}"


class BatchEncoder:
    """A Ray actor's encoder: rows of one numpy batch -> their latent means, ids and labels."""

    def __init__(
        self, directory: str, columns: Sequence[str], id_column: str | None,
        group_columns: Sequence[str], intra_op_threads: int = 1,
    ) -> None:
        from latentwatch.service.ort_runtime import OrtRuntime

        path = Path(directory)
        files = read_version(path.parent.name, path.name, path)
        self.manifest = files.manifest
        graph = "encoder" if "encoder" in self.manifest.graphs else "scorer"
        self.runtime = OrtRuntime.open(files.graph_path(graph), intra_op_threads)
        self.columns, self.id_column = tuple(columns), id_column
        self.group_columns = tuple(group_columns)

    def __call__(self, batch: Batch) -> Batch:
        rows = batch_rows(batch, self.columns)
        contract = InputContract.from_manifest(self.manifest, max_request_rows=len(rows))
        rows = validate_rows(rows, contract)  # (n, F) float32
        outputs = self.runtime.run({self.runtime.input_names[0]: rows})
        out: Batch = {MU: np.asarray(outputs["latent_mu"], dtype=np.float32)}  # (n, Z)
        if "latent_logvar" in outputs:
            out[LOGVAR] = np.asarray(outputs["latent_logvar"], dtype=np.float32)
        if self.id_column is not None:
            out[IDS] = np.asarray(batch[self.id_column]).astype(str)
        for i, name in enumerate(self.group_columns):
            out[_group_key(i)] = np.asarray(batch[name]).astype(str)
        return out


def bias_report_dataset(
    ds: ray.data.Dataset,
    repo: Path | str,
    model: str,
    version: str = "",
    *,
    features: Features = None,
    id_column: str | None = None,
    group_columns: Sequence[str] = (),
    options: BiasOptions | None = None,
    workers: int = 1,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    intra_op_threads: int = 1,
    worker_cpus: float = 1.0,
    max_rows: int = 10_000_000,
    labels: LabelLimits | None = None,
) -> BiasReport:
    """The BiasReport the BiasReport RPC gives for the same rows, ids and group labels.

    `id_column` names the rows (str() of each; without it a row's id is its position) and
    each of `group_columns` is a group column of the report. `options` as the RPC's (default
    BiasOptions()); `max_rows` and `labels` bound the report as the server's
    LATENTWATCH_BIAS_* settings do. `workers`, `intra_op_threads` and `worker_cpus` as in
    latentwatch.batch.ray_scoring.score_dataset.
    """
    options = (options or BiasOptions()).validated()
    if workers < 1 or batch_rows < 1:
        raise InvalidInput(f"workers and batch_rows must be at least 1, got {workers}, "
                           f"{batch_rows}")
    directory = source_version(Path(repo), model, version)
    files = read_version(directory.parent.name, directory.name, directory)
    manifest = files.manifest
    if options.n_decoded and "decoder" not in manifest.graphs:
        raise InvalidInput(
            f"n_decoded: {manifest.name}:{manifest.version} has no decoder graph, so no rows "
            "can be decoded; leave n_decoded unset or 0"
        )
    schema = ds.schema()
    if schema is None:
        raise InvalidInput("the dataset has no rows")
    available = list(schema.names)
    labelled = [*([id_column] if id_column else []), *group_columns]
    missing = [c for c in labelled if c not in available]
    if missing:
        raise InvalidInput(f"no column {', '.join(map(quote, missing))} in the dataset")
    columns = feature_columns(available, features, manifest.input.feature_names, labelled)
    limits = labels or LabelLimits()
    accumulator = BiasAccumulator(
        manifest.require_latent().latent_dim, max_rows=max_rows,
        max_group_values=limits.max_values, max_group_columns=limits.max_columns,
        max_label_chars=limits.max_chars,
    )
    means: list[NDArray[np.float32]] = []
    encoded = ds.map_batches(
        BatchEncoder, batch_size=batch_rows, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=worker_cpus,
        fn_constructor_args=(str(directory), columns, id_column, tuple(group_columns),
                             intra_op_threads),
    )
    blocks = iter(encoded.iter_batches(batch_format="numpy", batch_size=None))
    # closing(): a refused block stops Ray's executor now, freeing its workers' CPUs.
    with running(encoded, in_order=True), closing(blocks):  # type: ignore[type-var]
        for block in blocks:
            mu = block[MU]
            if mu.shape[0] == 0:
                continue
            groups = {name: list(block[_group_key(i)]) for i, name in enumerate(group_columns)}
            ids = list(block[IDS]) if IDS in block else None
            accumulator.add(mu, block.get(LOGVAR), ids=ids, groups=groups)
            means.append(mu)
    if accumulator.n_rows == 0:
        raise InvalidInput("the dataset has no rows")
    report = accumulator.finish(options, files.reference)
    stacked = np.concatenate(means)  # (N, Z)
    report = report.with_sparsest_latent(stacked[report.sparsest])
    k = min(options.decoded_rows, report.sparsest.shape[0])
    if k and "decoder" in manifest.graphs:
        positions = np.concatenate([report.sparsest[:k], report.densest[:k]])
        decoded = _decode_in_data_units(files.graph_path("decoder"), manifest,
                                        stacked[positions], intra_op_threads)
        report = report.with_decoded(decoded[:k], decoded[k:])
    return report


def _decode_in_data_units(
    path: Path, manifest: Manifest, latent: NDArray[np.float32], intra_op_threads: int
) -> NDArray[np.float32]:
    """(k, Z) latent means -> decoder means in the data's units, shaped as the rows were sent,
    as the service's BiasReport gives them (the decoder graph, then the inverted
    preprocessing)."""
    from latentwatch.service.ort_runtime import OrtRuntime

    runtime = OrtRuntime.open(path, intra_op_threads)
    z = np.ascontiguousarray(latent, dtype=np.float32)
    output = manifest.graphs["decoder"].outputs[0].name
    model_space = runtime.run({runtime.input_names[0]: z})[output]  # (k, F)
    data = manifest.input.preprocessing.invert(model_space).astype(np.float32)
    image_shape = manifest.input.image_shape
    return data.reshape(-1, *image_shape) if image_shape else data
