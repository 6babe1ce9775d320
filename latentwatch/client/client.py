"""Python client for the latentwatch gRPC API: numpy arrays in, plain results out.

    with LatentwatchClient("localhost:50051") as client:
        client.wait_ready(10.0)
        result = client.score("digits-vae", X, alpha=0.01)
        flagged_rows = np.flatnonzero(result.is_outlier)

        report = client.bias_report("digits-vae", X, ids=row_ids, groups={"label": y})
        under_represented = [report.id_of(p) for p in report.sparsest]

Server errors arrive as `latentwatch.errors` exceptions chosen by gRPC status code, with the
server's message as their text. Importing this module never imports torch or onnx.

For a server with TLS pass `tls_ca` (the CA file that signed its certificate), for mTLS also
`tls_cert` and `tls_key`; for one with tokens pass `token` or set LATENTWATCH_TOKEN
(see latentwatch.client.channel).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import NoReturn, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from numpy.typing import NDArray

from latentwatch.bias.accumulator import BiasReport
from latentwatch.client.channel import FileArg, open_channel
from latentwatch.client.frames import aligned, frame_rows
from latentwatch.client.generative import GenerativeCalls, as_rows
from latentwatch.client.streaming import StreamPolicy, score_chunks
from latentwatch.errors import InvalidInput, NotReady, error_for_status
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.catalog import ModelInfo, ModelSummary, TensorInfo
from latentwatch.scoring.conformal import benjamini_hochberg
from latentwatch.scoring.results import FdrResult, ScoreResult
from latentwatch.wire.bias import (
    BIAS_CHUNK_ROWS,
    bias_requests,
    options_to_proto,
    report_from_response,
    row_labels,
)
from latentwatch.wire.generate import Generated, Traversal
from latentwatch.wire.score import (
    latents_from_response,
    model_info_from_message,
    models_from_response,
    result_from_response,
    score_request,
)
from latentwatch.wire.tensors import to_tensor

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "BiasReport",
    "FdrResult",
    "Generated",
    "LatentwatchClient",
    "ModelInfo",
    "ModelSummary",
    "ScoreResult",
    "StreamPolicy",
    "TensorInfo",
    "Traversal",
    "benjamini_hochberg",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
T = TypeVar("T")

def _short(details: str) -> str:
    """gRPC's connection errors carry a long chain; its last clause says what happened."""
    last = details.rsplit(":", 1)[-1].strip()
    return last or details


def _raise_rpc_error(err: grpc.RpcError) -> NoReturn:
    """Raises the class latentwatch/errors.py's status table gives the call's status code."""
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (err.details() if isinstance(err, grpc.Call) else None) or str(err)
    raise error_for_status(code, details) from err


class LatentwatchClient(GenerativeCalls):
    """A synchronous client over one gRPC channel; safe to share across threads.

    `tls_ca`, `tls_cert`, `tls_key` (files) turn on TLS and mTLS; `token` (default: the
    LATENTWATCH_TOKEN environment variable) goes with every call as a bearer token.

    `timeout_s` is the deadline of each unary call and of `connect`. Streams (`score_stream`,
    `bias_report`, and `score` with `batch_rows`) have no overall deadline, since their length
    depends on the data; `stream_policy` bounds the rows a score stream has in flight and how it
    retries RESOURCE_EXHAUSTED and UNAVAILABLE (see latentwatch.client.streaming).

    Inputs may be pandas DataFrames: their columns are put in the model's feature order by name
    (refused, listing missing and unexpected columns, when the names differ). Arrays are
    positional.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        stream_policy: StreamPolicy | None = None,
        tls_ca: FileArg | None = None,
        tls_cert: FileArg | None = None,
        tls_key: FileArg | None = None,
        token: str | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.target = target
        self.timeout_s = timeout_s
        self.stream_policy = stream_policy or StreamPolicy()
        self._channel = open_channel(
            target, max_message_bytes=max_message_bytes, tls_ca=tls_ca, tls_cert=tls_cert,
            tls_key=tls_key, token=token,
        )
        self._stub = pb_grpc.LatentwatchStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> LatentwatchClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def connect(self) -> None:
        """Fails fast (NotReady "cannot connect to HOST:PORT") when nothing answers at the target.

        One health check without waiting for the channel: a refused connection fails at once,
        a silent host after `timeout_s`. A server that answers but still loads is fine here.
        """
        try:
            self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=self.timeout_s)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
            if code == grpc.StatusCode.UNAVAILABLE:
                details = (err.details() if isinstance(err, grpc.Call) else None) or str(err)
                raise NotReady(f"cannot connect to {self.target} ({_short(details)})") from err
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise NotReady(
                    f"cannot connect to {self.target}: no answer within {self.timeout_s:g} s"
                ) from err
            # UNIMPLEMENTED and the like: something answers; the calls will say what is wrong.

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Blocks until the server's health check says SERVING; raises NotReady after timeout_s."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise NotReady(f"{self.target} not SERVING after {timeout_s:.1f} s ({last})")
            try:
                reply = self._health.Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=min(left_s, 2.0),
                    wait_for_ready=True,
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as err:
                last = err.code().name if isinstance(err, grpc.Call) else str(err)
            # Models load and warm up over seconds; polling at 10 Hz costs nothing.
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0.0)))

    def score(
        self,
        model: str,
        X: NDArray,
        *,
        version: str = "",
        kinds: Sequence[str] = (),
        alpha: float | None = None,
        fdr: float | None = None,
        batch_rows: int | None = None,
        score_kind: str = "",
    ) -> ScoreResult:
        """Scores rows (N, F) or images (N, H, W) of any numeric dtype.

        `score_kind` picks the kind that `score`, the p-values and the decisions use (default:
        the model's). `kinds` names extra kinds to return in `scores` ("*" for all). `alpha`
        sets the false-alarm rate of `is_outlier` (default: the model's). With `fdr`,
        `result.fdr` holds the Benjamini-Hochberg decision over all N rows.

        With `batch_rows`, rows travel in chunks of that size over one ScoreStream and results
        are concatenated in order. The BH decision is then recomputed here over the p-values of
        all rows (the server's per-chunk decisions are discarded), so it equals what one
        request over all rows would give.
        """
        rows = self._named_rows(X, model, version)
        if batch_rows is not None and batch_rows < 1:
            raise InvalidInput(f"batch_rows must be at least 1, got {batch_rows}")
        if batch_rows is None or rows.shape[0] <= batch_rows:
            request = score_request(model, rows, version, kinds, alpha, fdr, score_kind)
            response = self._unary(self._stub.Score, request)
            return result_from_response(response, rows.shape[0])
        chunks = (rows[i : i + batch_rows] for i in range(0, rows.shape[0], batch_rows))
        parts = list(
            self.score_stream(
                model, chunks, version=version, kinds=kinds, alpha=alpha, fdr=fdr,
                score_kind=score_kind,
            )
        )
        combined = ScoreResult.concat(parts)
        if fdr is None:
            return combined
        return replace(combined, fdr=benjamini_hochberg(combined.p_value, fdr))

    def score_stream(
        self,
        model: str,
        batches: Iterable[NDArray],
        *,
        version: str = "",
        kinds: Sequence[str] = (),
        alpha: float | None = None,
        fdr: float | None = None,
        score_kind: str = "",
    ) -> Iterator[ScoreResult]:
        """Scores each batch over one ScoreStream, yielding one result per batch, in order.

        Batches are read lazily and at most `stream_policy.max_in_flight_rows` rows are in
        flight, so a generator over a large file streams in bounded memory whatever the
        server's queue limit; unanswered batches are retried on RESOURCE_EXHAUSTED and
        UNAVAILABLE. With `fdr`, each result's BH decision covers that batch only. DataFrame
        batches are put in the model's column order by name.
        """
        info: list[ModelInfo] = []

        def rows_of(index: int, batch: NDArray) -> NDArray:
            raw, names = frame_rows(batch, what=f"batch {index}")
            rows = as_rows(raw, what=f"batch {index}")
            if names is None:
                return rows
            if not info:
                info.append(self.get_model(model, version))
            return aligned(rows, names, info[0], f"batch {index}")

        def make(index: int, rows: NDArray) -> pb.ScoreRequest:
            return score_request(model, rows, version, kinds, alpha, fdr, score_kind, str(index))

        yield from score_chunks(
            self._stub.ScoreStream,
            (rows_of(i, b) for i, b in enumerate(batches)),
            make,
            self.stream_policy,
            self.target,
        )

    def _unary(self, method: Callable[..., T], request: object) -> T:
        """One unary call with the client's deadline; errors as latentwatch.errors classes."""
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as err:
            _raise_rpc_error(err)

    def _named_rows(self, X: NDArray, model: str, version: str) -> NDArray:
        raw, names = frame_rows(X)
        rows = as_rows(raw)
        if names is None:
            return rows
        return aligned(rows, names, self.get_model(model, version), "X")

    def encode(
        self, model: str, X: NDArray, *, version: str = ""
    ) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        """Encoder means (N, Z) and log-variances (N, Z); None for plain autoencoders."""
        rows = self._named_rows(X, model, version)
        request = pb.EncodeRequest(model_name=model, model_version=version, input=to_tensor(rows))
        response = self._unary(self._stub.Encode, request)
        return latents_from_response(response)

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

        try:
            response = self._stub.BiasReport(requests())
        except grpc.RpcError as err:
            if failures:
                raise failures[0] from err
            _raise_rpc_error(err)
        return report_from_response(response, id_list)

    def list_models(self) -> list[ModelSummary]:
        response = self._unary(self._stub.ListModels, pb.ListModelsRequest())
        return models_from_response(response)

    def get_model(self, name: str, version: str = "") -> ModelInfo:
        request = pb.GetModelRequest(model_name=name, model_version=version)
        info = self._unary(self._stub.GetModel, request)
        return model_info_from_message(info)
