"""BiasReport on the wire: latentwatch.bias dataclasses <-> latentwatch.v1 messages.

Shared by the servicer (report -> response) and the client (response -> report), so that both
directions stay one mapping. Per-row arrays travel as FP64 tensors (compact for millions of
rows); per-dimension arrays as repeated fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.accumulator import BiasReport, DimensionHistogram, GroupStats
from latentwatch.bias.drift import Drift, ReferenceComparison
from latentwatch.bias.options import DEFAULT_SIGNIFICANCE_LEVEL, BiasOptions
from latentwatch.errors import InvalidInput, LatentwatchError
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.tensors import from_tensor, to_tensor

# Rows per BiasReport message by default (client and CLI); the server sizes its message limit
# so that a chunk this long with every group label at its longest still fits.
BIAS_CHUNK_ROWS = 4096

def options_from_proto(options: pb.BiasReportOptions) -> BiasOptions:
    """The request's options over the defaults, as sent: the service validates them."""
    default = BiasOptions()
    return BiasOptions(
        bins=options.bins if options.HasField("bins") else default.bins,
        alpha=options.alpha if options.HasField("alpha") else default.alpha,
        mode=options.mode or default.mode,
        top_k=options.top_k if options.HasField("top_k") else default.top_k,
        sparse_fraction=(
            options.sparse_fraction if options.HasField("sparse_fraction")
            else default.sparse_fraction
        ),
        n_decoded=options.n_decoded if options.HasField("n_decoded") else None,
        significance_level=(
            options.significance_level if options.HasField("significance_level")
            else default.significance_level
        ),
        density=options.density or default.density,
    )


def options_to_proto(
    *,
    bins: int | None = None,
    alpha: float | None = None,
    mode: str | None = None,
    top_k: int | None = None,
    sparse_fraction: float | None = None,
    n_decoded: int | None = None,
    significance_level: float | None = None,
    density: str | None = None,
) -> pb.BiasReportOptions:
    """Only what was given is set: the server fills in its defaults for the rest."""
    options = pb.BiasReportOptions(mode=mode or "", density=density or "")
    if bins is not None:
        options.bins = bins
    if alpha is not None:
        options.alpha = alpha
    if top_k is not None:
        options.top_k = top_k
    if sparse_fraction is not None:
        options.sparse_fraction = sparse_fraction
    if n_decoded is not None:
        options.n_decoded = n_decoded
    if significance_level is not None:
        options.significance_level = significance_level
    return options


def row_labels(
    n: int, ids: Sequence[object] | None, groups: Mapping[str, Sequence[object]] | None
) -> tuple[list[str] | None, dict[str, Sequence[object]]]:
    """Ids as strings and group columns, each checked to hold one entry per row."""
    id_list = None if ids is None else [str(i) for i in ids]
    if id_list is not None and len(id_list) != n:
        raise InvalidInput(f"ids: {len(id_list)} given for {n} rows")
    columns: dict[str, Sequence[object]] = {}
    for name, values in (groups or {}).items():
        column = values if isinstance(values, np.ndarray) else list(values)
        if len(column) != n:
            raise InvalidInput(f"groups[{name!r}]: {len(column)} labels for {n} rows")
        columns[str(name)] = column
    return id_list, columns


def bias_requests(
    model: str,
    rows: NDArray,
    *,
    version: str = "",
    ids: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[object]] | None = None,
    options: pb.BiasReportOptions | None = None,
    chunk_rows: int = BIAS_CHUNK_ROWS,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[pb.BiasReportRequest]:
    """Requests of `chunk_rows` rows each, built lazily so only one chunk is on the wire side
    at a time; the first names the model and carries the options. `progress(sent, total)` is
    called once gRPC has taken each chunk. With no rows, one request without input is sent
    (the server answers INVALID_ARGUMENT)."""
    n = rows.shape[0]
    for start in range(0, max(n, 1), chunk_rows):
        stop = min(start + chunk_rows, n)
        request = pb.BiasReportRequest(
            ids=ids[start:stop] if ids is not None else [],
            groups=[
                pb.GroupColumn(name=name, values=[str(v) for v in values[start:stop]])
                for name, values in (groups or {}).items()
            ],
        )
        if stop > start:
            request.input.CopyFrom(to_tensor(rows[start:stop]))
        if start == 0:
            request.model_name = model
            request.model_version = version
            if options is not None:
                request.options.CopyFrom(options)
        yield request
        if progress is not None:
            progress(stop, n)


def response_from_report(
    report: BiasReport, model_name: str, model_version: str
) -> pb.BiasReportResponse:
    o = report.options
    response = pb.BiasReportResponse(
        model_name=model_name,
        model_version=model_version,
        n_rows=report.n_rows,
        latent_dim=report.latent_dim,
        mode=o.mode,
        bins=o.bins,
        alpha=o.alpha,
        sparse_fraction=o.sparse_fraction,
        top_k=o.top_k,
        log_density=to_tensor(np.asarray(report.log_density, dtype=np.float64)),
        weight=to_tensor(np.asarray(report.weight, dtype=np.float64)),
        effective_sample_size=report.effective_sample_size,
        sparsest=report.sparsest.tolist(),
        densest=report.densest.tolist(),
        histograms=[
            pb.DimensionHistogram(edges=h.edges.tolist(), counts=h.counts.tolist())
            for h in report.histograms
        ],
        groups=[
            pb.GroupStats(
                column=g.column,
                value=g.value,
                n_rows=g.n_rows,
                share=g.share,
                sparse_share=g.sparse_share,
                representation_ratio=g.representation_ratio,
                mean_weight=g.mean_weight,
                flagged=g.flagged,
                n_sparse_rows=g.n_sparse_rows,
                ratio_low=g.ratio_low,
                ratio_high=g.ratio_high,
                p_value=g.p_value,
                significant=g.significant,
                even_share=g.even_share,
                share_ratio=g.share_ratio,
                share_ratio_low=g.share_ratio_low,
                share_ratio_high=g.share_ratio_high,
                share_p_value=g.share_p_value,
                share_significant=g.share_significant,
                share_flagged=g.share_flagged,
            )
            for g in report.groups
        ],
        kl_to_prior=report.kl_to_prior.tolist(),
        significance_level=o.significance_level,
        density=o.density,
    )
    if report.worst_group_ratio is not None:
        response.worst_group_ratio = report.worst_group_ratio
    if report.reference is not None:
        r = report.reference
        response.reference.CopyFrom(
            pb.ReferenceComparison(
                edges=to_tensor(np.asarray(r.edges, dtype=np.float64)),
                reference_share=to_tensor(np.asarray(r.reference_share, dtype=np.float64)),
                share=to_tensor(np.asarray(r.share, dtype=np.float64)),
                below=r.below.tolist(),
                above=r.above.tolist(),
            )
        )
    if report.drift is not None:
        d = report.drift
        response.drift.CopyFrom(
            pb.Drift(
                overall=d.overall,
                level=d.level,
                psi=d.psi.tolist(),
                mean_shift=d.mean_shift.tolist(),
                active=d.active.tolist(),
                max_psi=d.max_psi,
                max_psi_dimension=d.max_psi_dimension,
                gaussian_kl=d.gaussian_kl,
                reference_rows=d.reference_rows,
            )
        )
    if report.reference_kl_to_prior is not None:
        response.reference_kl_to_prior.extend(report.reference_kl_to_prior.tolist())
    if report.decoded_sparsest is not None:
        response.decoded_sparsest.CopyFrom(to_tensor(report.decoded_sparsest.astype(np.float32)))
    if report.decoded_densest is not None:
        response.decoded_densest.CopyFrom(to_tensor(report.decoded_densest.astype(np.float32)))
    if report.sparsest_latent is not None:
        response.sparsest_latent.CopyFrom(to_tensor(report.sparsest_latent.astype(np.float32)))
    return response


def _doubles(values: object) -> NDArray[np.float64]:
    return np.array(values, dtype=np.float64)


def report_from_response(
    response: pb.BiasReportResponse, ids: list[str] | None = None
) -> BiasReport:
    """The report the server computed; `ids` are the ids the rows were sent with (or None)."""
    n = int(response.n_rows)
    log_density = from_tensor(response.log_density, what="log_density").astype(np.float64)
    weight = from_tensor(response.weight, what="weight").astype(np.float64)
    if log_density.shape != (n,) or weight.shape != (n,):
        raise LatentwatchError(
            f"server returned {list(log_density.shape)} densities and {list(weight.shape)} "
            f"weights for {n} rows"
        )
    if ids is not None and len(ids) != n:
        raise LatentwatchError(f"server reported {n} rows; {len(ids)} were sent")
    reference = None
    if response.HasField("reference"):
        r = response.reference
        reference = ReferenceComparison(
            edges=from_tensor(r.edges, what="reference.edges").astype(np.float64),
            reference_share=from_tensor(r.reference_share, what="reference_share").astype(
                np.float64
            ),
            share=from_tensor(r.share, what="reference.share").astype(np.float64),
            below=_doubles(r.below),
            above=_doubles(r.above),
        )
    drift = None
    if response.HasField("drift"):
        d = response.drift
        drift = Drift(
            overall=d.overall,
            level=d.level,
            psi=_doubles(d.psi),
            mean_shift=_doubles(d.mean_shift),
            active=np.array(d.active, dtype=bool),
            max_psi=d.max_psi,
            max_psi_dimension=int(d.max_psi_dimension),
            gaussian_kl=d.gaussian_kl,
            reference_rows=int(d.reference_rows),
        )
    decoded = {
        name: from_tensor(getattr(response, name), what=name) if response.HasField(name) else None
        for name in ("decoded_sparsest", "decoded_densest", "sparsest_latent")
    }
    return BiasReport(
        n_rows=n,
        latent_dim=int(response.latent_dim),
        options=BiasOptions(
            bins=response.bins,
            alpha=response.alpha,
            mode=response.mode,
            top_k=response.top_k,
            sparse_fraction=response.sparse_fraction,
            significance_level=response.significance_level or DEFAULT_SIGNIFICANCE_LEVEL,
            # Empty from a server that does not say what ranked the rows.
            density=response.density,
        ),
        ids=ids,
        log_density=log_density,
        weight=weight,
        effective_sample_size=response.effective_sample_size,
        histograms=[
            DimensionHistogram(_doubles(h.edges), np.array(h.counts, dtype=np.int64))
            for h in response.histograms
        ],
        sparsest=np.array(response.sparsest, dtype=np.int64),
        densest=np.array(response.densest, dtype=np.int64),
        groups=[
            GroupStats(
                column=g.column,
                value=g.value,
                n_rows=int(g.n_rows),
                share=g.share,
                sparse_share=g.sparse_share,
                representation_ratio=g.representation_ratio,
                mean_weight=g.mean_weight,
                flagged=g.flagged,
                n_sparse_rows=int(g.n_sparse_rows),
                ratio_low=g.ratio_low,
                ratio_high=g.ratio_high,
                p_value=g.p_value,
                significant=g.significant,
                even_share=g.even_share,
                share_ratio=g.share_ratio,
                share_ratio_low=g.share_ratio_low,
                share_ratio_high=g.share_ratio_high,
                share_p_value=g.share_p_value,
                share_significant=g.share_significant,
                share_flagged=g.share_flagged,
            )
            for g in response.groups
        ],
        worst_group_ratio=(
            response.worst_group_ratio if response.HasField("worst_group_ratio") else None
        ),
        kl_to_prior=_doubles(response.kl_to_prior),
        reference=reference,
        drift=drift,
        reference_kl_to_prior=(
            _doubles(response.reference_kl_to_prior) if response.reference_kl_to_prior else None
        ),
        decoded_sparsest=decoded["decoded_sparsest"],
        decoded_densest=decoded["decoded_densest"],
        sparsest_latent=decoded["sparsest_latent"],
    )
