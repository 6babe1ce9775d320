"""BiasReport over the client's channel: rows streamed in chunks, one report back."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grpc
from numpy.typing import NDArray

from latentwatch.bias.accumulator import BiasReport
from latentwatch.client.retry import Retrier
from latentwatch.errors import InvalidInput
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.bias import (
    BIAS_CHUNK_ROWS,
    bias_requests,
    options_to_proto,
    report_from_response,
    row_labels,
)


class BiasCalls:
    """BiasReport, for LatentwatchClient."""

    _stub: Any
    _retrier: Retrier
    target: str

    def _named_rows(self, X: NDArray, model: str, version: str) -> NDArray:
        raise NotImplementedError  # LatentwatchClient's

    def bias_report(
        self,
        model: str,
        X: NDArray,
        *,
        version: str = "",
        ids: Sequence[object] | None = None,
        groups: Mapping[str, Sequence[object]] | None = None,
        bins: int | None = None,
        alpha: float | None = None,
        mode: str | None = None,
        top_k: int | None = None,
        sparse_fraction: float | None = None,
        n_decoded: int | None = None,
        significance_level: float | None = None,
        density: str | None = None,
        chunk_rows: int = BIAS_CHUNK_ROWS,
        progress: Callable[[int, int], None] | None = None,
    ) -> BiasReport:
        """Latent-density bias report over rows (N, F) or images, streamed in chunks.

        `ids` (N, str() of each) name the rows in `report.id_of`; `groups` maps a column name to
        N labels (str() of each) for per-group statistics. Options left None take the server's
        defaults (see latentwatch.bias.options). `progress(rows_sent, total)` follows the upload.
        """
        rows = self._named_rows(X, model, version)
        n = rows.shape[0]
        if chunk_rows < 1:
            raise InvalidInput(f"chunk_rows must be at least 1, got {chunk_rows}")
        id_list, columns = row_labels(n, ids, groups)
        options = options_to_proto(
            bins=bins, alpha=alpha, mode=mode, top_k=top_k, sparse_fraction=sparse_fraction,
            n_decoded=n_decoded, significance_level=significance_level, density=density,
        )
        # An exception inside the request iterator reaches us only as CANCELLED; keep it.
        failures: list[Exception] = []

        def requests() -> Iterator[pb.BiasReportRequest]:
            try:
                yield from bias_requests(
                    model, rows, version=version, ids=id_list, groups=columns, options=options,
                    chunk_rows=chunk_rows, progress=progress,
                )
            except Exception as err:
                failures.append(err)
                raise

        def attempt(_: float | None) -> pb.BiasReportResponse:
            # The rows are in memory, so a refused report is sent again from its first chunk.
            try:
                return self._stub.BiasReport(requests())
            except grpc.RpcError as err:
                if failures:
                    raise failures[0] from err
                raise

        response = self._retrier.call("BiasReport", attempt, None, self.target)
        return report_from_response(response, id_list)
