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

Several servers: `LatentwatchClient(["host1:50051", "host2:50051"])` (or "host1:50051,host2:50051")
takes them in turn, and `LatentwatchClient("dns:///latentwatch-headless:50051")` spreads calls
over every address the name resolves to (a headless Service's pods). Calls refused with
UNAVAILABLE or RESOURCE_EXHAUSTED are retried with jittered backoff (latentwatch.client.retry).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from numpy.typing import NDArray

from latentwatch.bias.accumulator import BiasReport
from latentwatch.client.bias_calls import BiasCalls
from latentwatch.client.channel import (
    KEEPALIVE_S,
    ChannelPool,
    FileArg,
    open_channel,
    parse_targets,
)
from latentwatch.client.frames import aligned, frame_rows
from latentwatch.client.generative import GenerativeCalls, as_rows
from latentwatch.client.retry import Retrier, RetryPolicy, status_of
from latentwatch.client.streaming import StreamPolicy, score_chunks
from latentwatch.errors import InvalidInput, NotReady
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.catalog import ModelInfo, ModelSummary, TensorInfo
from latentwatch.scoring.conformal import benjamini_hochberg
from latentwatch.scoring.results import FdrResult, ScoreResult
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
    "RetryPolicy",
    "ScoreResult",
    "StreamPolicy",
    "TensorInfo",
    "Traversal",
    "benjamini_hochberg",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

def _short(details: str) -> str:
    """gRPC's connection errors carry a long chain; its last clause says what happened."""
    last = details.rsplit(":", 1)[-1].strip()
    return last or details


class LatentwatchClient(GenerativeCalls, BiasCalls):
    """A synchronous client over one gRPC channel per target; safe to share across threads.

    `target`: a gRPC target ("host:50051", "dns:///name:50051", "ipv4:10.0.0.1:50051,...") or
    several (a list, or comma-separated), taken in turn. `tls_ca`, `tls_cert`, `tls_key` (files)
    turn on TLS and mTLS for every target; `token` (default: the LATENTWATCH_TOKEN environment
    variable) goes with every call as a bearer token.

    `timeout_s` is the deadline of each unary call, retries and their waits included, and of
    `connect`; past it the call raises a LatentwatchError with code DEADLINE_EXCEEDED that says
    so. Streams (`score_stream`, `bias_report`, and `score` with `batch_rows`) have no overall
    deadline, since their length depends on the data. `retry` says which calls are retried on
    UNAVAILABLE and RESOURCE_EXHAUSTED, how often and with what backoff (default RetryPolicy();
    latentwatch.client.retry). `stream_policy` bounds the rows a score stream has in flight, when
    it moves to a new stream, and how it retries (default: `retry`'s settings;
    latentwatch.client.streaming). `keepalive_s` is the ping interval on busy connections.

    Inputs may be pandas DataFrames: their columns are put in the model's feature order by name
    (refused, listing missing and unexpected columns, when the names differ). Arrays are
    positional.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        timeout_s: float = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        retry: RetryPolicy | None = None,
        stream_policy: StreamPolicy | None = None,
        tls_ca: FileArg | None = None,
        tls_cert: FileArg | None = None,
        tls_key: FileArg | None = None,
        token: str | None = None,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        targets = parse_targets(target)
        self.target = ",".join(targets)
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.stream_policy = stream_policy or StreamPolicy(**vars(self.retry))
        self._retrier = Retrier(self.retry)
        self._pool = ChannelPool(targets, lambda one: open_channel(
            one, max_message_bytes=max_message_bytes, tls_ca=tls_ca, tls_cert=tls_cert,
            tls_key=tls_key, token=token, keepalive_s=keepalive_s,
        ))
        self._stubs = [pb_grpc.LatentwatchStub(c) for c in self._pool.channels]
        self._healths = [health_pb2_grpc.HealthStub(c) for c in self._pool.channels]

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
        self._pool.close()

    @property
    def _stub(self) -> pb_grpc.LatentwatchStub:
        """The stub of the next target in turn (one call's worth)."""
        return self._stubs[self._pool.pick()]

    def connect(self) -> None:
        """Fails fast (NotReady "cannot connect to HOST:PORT") when nothing answers at any target.

        One health check per target without waiting for the channel: a refused connection fails
        at once, a silent host after `timeout_s`. A server that answers but still loads is fine
        here; so is a list of targets of which one answers.
        """
        failures = []
        for target, health in zip(self._pool.targets, self._healths, strict=True):
            try:
                health.Check(health_pb2.HealthCheckRequest(service=""), timeout=self.timeout_s)
                return
            except grpc.RpcError as err:
                code, details = status_of(err)
                if code == grpc.StatusCode.UNAVAILABLE:
                    failures.append((err, f"cannot connect to {target} ({_short(details)})"))
                elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    failures.append((err, f"cannot connect to {target}: no answer within "
                                          f"{self.timeout_s:g} s"))
                else:
                    # UNIMPLEMENTED and the like: something answers; calls say what is wrong.
                    return
        raise NotReady("; ".join(message for _, message in failures)) from failures[0][0]

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Blocks until a server's health check says SERVING (one of the targets is enough;
        calls go to the others once they serve too); raises NotReady after timeout_s."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise NotReady(f"{self.target} not SERVING after {timeout_s:.1f} s ({last})")
            try:
                reply = self._healths[self._pool.pick()].Check(
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
        explain: bool = False,
        explain_top_k: int = 0,
        groups: Sequence[object] | None = None,
    ) -> ScoreResult:
        """Scores rows (N, F) or images (N, H, W) of any numeric dtype.

        `score_kind` picks the kind that `score`, the p-values and the decisions use (default:
        the model's). `kinds` names extra kinds to return in `scores` ("*" for all). `alpha`
        sets the false-alarm rate of `is_outlier` (default: the model's). With `fdr`,
        `result.fdr` holds the Benjamini-Hochberg decision over all N rows. `groups` (N, str()
        of each) gives each row's group for group-conditional p-values (a version recalibrated
        with a group column: ModelInfo.calibration_groups).

        With `batch_rows`, rows travel in chunks of that size over one ScoreStream and results
        are concatenated in order. The BH decision is then recomputed here over the p-values of
        all rows (the server's per-chunk decisions are discarded), so it equals what one
        request over all rows would give. With `explain`, `result.explanations` holds each
        row's `explain_top_k` (0: the server's default, 5) most unusual features.
        """
        rows = self._named_rows(X, model, version)
        if batch_rows is not None and batch_rows < 1:
            raise InvalidInput(f"batch_rows must be at least 1, got {batch_rows}")
        labels = [str(g) for g in groups] if groups is not None else []
        if batch_rows is None or rows.shape[0] <= batch_rows:
            request = score_request(model, rows, version, kinds, alpha, fdr, score_kind,
                                    explain_top_k=explain_top_k if explain else None,
                                    groups=labels)
            response = self._unary("Score", request)
            return result_from_response(response, rows.shape[0])
        starts = range(0, rows.shape[0], batch_rows)
        parts = list(
            self.score_stream(
                model, (rows[i : i + batch_rows] for i in starts), version=version, kinds=kinds,
                alpha=alpha, fdr=fdr, score_kind=score_kind, explain=explain,
                explain_top_k=explain_top_k,
                groups=None if groups is None else (labels[i : i + batch_rows] for i in starts),
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
        explain: bool = False,
        explain_top_k: int = 0,
        groups: Iterable[Sequence[object]] | None = None,
    ) -> Iterator[ScoreResult]:
        """Scores each batch over one ScoreStream, yielding one result per batch, in order.

        Batches are read lazily and at most `stream_policy.max_in_flight_rows` rows are in
        flight, so a generator over a large file streams in bounded memory whatever the
        server's queue limit; unanswered batches are retried on RESOURCE_EXHAUSTED and
        UNAVAILABLE. With `fdr`, each result's BH decision covers that batch only. DataFrame
        batches are put in the model's column order by name. `groups` yields each batch's
        row groups, batch by batch (see `score`).
        """
        info: list[ModelInfo] = []
        group_batches = None if groups is None else iter(groups)
        groups_of: dict[int, list[str]] = {}  # batch index -> its groups, until answered

        def rows_of(index: int, batch: NDArray) -> NDArray:
            if group_batches is not None:
                labels = next(group_batches, None)
                if labels is None:
                    raise InvalidInput(f"groups: none for batch {index}; give one per batch")
                groups_of[index] = [str(g) for g in labels]
            raw, names = frame_rows(batch, what=f"batch {index}")
            rows = as_rows(raw, what=f"batch {index}")
            if names is None:
                return rows
            if not info:
                info.append(self.get_model(model, version))
            return aligned(rows, names, info[0], f"batch {index}")

        def make(index: int, rows: NDArray) -> pb.ScoreRequest:
            return score_request(model, rows, version, kinds, alpha, fdr, score_kind, str(index),
                                 explain_top_k=explain_top_k if explain else None,
                                 groups=groups_of.get(index, ()))

        results = score_chunks(
            lambda requests: self._stub.ScoreStream(requests),
            (rows_of(i, b) for i, b in enumerate(batches)),
            make,
            self.stream_policy,
            self.target,
            Retrier(self.stream_policy),
        )
        for index, result in enumerate(results):
            groups_of.pop(index, None)
            yield result

    def _unary(self, method: str, request: object) -> Any:
        """The unary RPC `method` (e.g. "Score") with the client's deadline and retries, each
        attempt on the next target in turn; errors as latentwatch.errors classes."""
        def attempt(left_s: float | None) -> Any:
            return getattr(self._stub, method)(request, timeout=left_s)

        return self._retrier.call(method, attempt, self.timeout_s, self.target)

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
        response = self._unary("Encode", request)
        return latents_from_response(response)

    def list_models(self) -> list[ModelSummary]:
        response = self._unary("ListModels", pb.ListModelsRequest())
        return models_from_response(response)

    def get_model(self, name: str, version: str = "") -> ModelInfo:
        request = pb.GetModelRequest(model_name=name, model_version=version)
        info = self._unary("GetModel", request)
        return model_info_from_message(info)
