"""The callers of the protocols benchmark: each protocol's client in a closed loop, measured.

benchmarks/protocols.py starts the servers and reports; this module holds what drives them:
latentwatch.v1 Score, tritonclient.grpc.aio against KServe v2 (latentwatch or Triton),
tritonclient.http.aio against the REST port, and the pre-serialized variants.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import processes
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_grpc_aio
import tritonclient.http as triton_http
import tritonclient.http.aio as triton_http_aio
from grpc_load import CALL_TIMEOUT_S, MAX_MESSAGE_BYTES, LoadResult, run_load
from numpy.typing import NDArray
from throughput import MODEL_NAME, _requests
from tritonclient.grpc import service_pb2

from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.service.runtime import triton_model_name
from latentwatch.wire.score import result_from_response, score_request

logger = logging.getLogger("protocols")

CASES = {
    "a": "latentwatch.v1 Score, grpc.aio stub",
    "b": "tritonclient.grpc.aio -> KServe v2",
    "c": "tritonclient.http.aio -> REST, binary",
    "d": "Score -> latentwatch on Triton runtime",
    "e": "tritonclient.grpc.aio -> Triton scorer",
    "a0": "Score, pre-serialized (throughput.py)",
    "b0": "ModelInfer -> latentwatch, pre-serialized",
    "e0": "ModelInfer -> Triton, pre-serialized",
}
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
GRPC_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
TRITON_SCORER = triton_model_name(MODEL_NAME, "scorer")

Call = Callable[[int], Awaitable[None]]  # call(i) sends request i and reads its answer


@dataclass(frozen=True)
class Targets:
    latentwatch: str  # gRPC HOST:PORT of latentwatch on ONNX Runtime
    rest: str  # its REST HOST:PORT
    on_triton: str  # gRPC HOST:PORT of latentwatch on the Triton runtime
    triton: str  # gRPC HOST:PORT of Triton


async def closed_loop(call: Call, rows_per_request: int, concurrency: int, warmup_s: float,
                      duration_s: float) -> LoadResult:
    """Callers each send their next request when one returns; as benchmarks/grpc_load.py, a call
    counts by when it completed, so the window holds exactly its completions."""
    latencies_s: list[float] = []
    window_start_s = time.perf_counter() + warmup_s
    window_end_s = window_start_s + duration_s

    async def caller(index: int) -> None:
        while (sent_s := time.perf_counter()) < window_end_s:
            await call(index)
            done_s = time.perf_counter()
            if window_start_s <= done_s < window_end_s:
                latencies_s.append(done_s - sent_s)
            index += concurrency

    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    lat_ms = np.asarray(latencies_s) * 1e3
    if lat_ms.size == 0:
        raise RuntimeError(f"no call completed inside the {duration_s} s window")
    return LoadResult(
        concurrency=concurrency, rows_per_request=rows_per_request, duration_s=duration_s,
        requests=int(lat_ms.size), latency_p50_ms=float(np.percentile(lat_ms, 50)),
        latency_p99_ms=float(np.percentile(lat_ms, 99)), latency_mean_ms=float(lat_ms.mean()),
    )


@asynccontextmanager
async def _score_v1(target: str, blocks: list[NDArray[np.float32]]) -> AsyncIterator[Call]:
    async with grpc.aio.insecure_channel(target, options=GRPC_OPTIONS) as channel:
        stub = pb_grpc.LatentwatchStub(channel)

        async def call(i: int) -> None:
            rows = blocks[i % len(blocks)]
            request = score_request(MODEL_NAME, rows, "", (), None, None, "")
            response = await stub.Score(request, timeout=CALL_TIMEOUT_S)
            result_from_response(response, rows.shape[0])

        yield call


@asynccontextmanager
async def _kserve_grpc(target: str, model: str, blocks: list[NDArray[np.float32]],
                       outputs: tuple[str, ...]) -> AsyncIterator[Call]:
    """`outputs` empty: the server's default outputs, of which score and p_value are read."""
    client = triton_grpc_aio.InferenceServerClient(target)
    asked = [triton_grpc.InferRequestedOutput(name) for name in outputs] or None
    read = outputs or ("score", "p_value")

    async def call(i: int) -> None:
        rows = blocks[i % len(blocks)]
        tensor = triton_grpc.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = await client.infer(model, [tensor], outputs=asked, client_timeout=CALL_TIMEOUT_S)
        for name in read:
            result.as_numpy(name)

    try:
        yield call
    finally:
        await client.close()


@asynccontextmanager
async def _kserve_rest(url: str, blocks: list[NDArray[np.float32]],
                       concurrency: int) -> AsyncIterator[Call]:
    client = triton_http_aio.InferenceServerClient(url, conn_limit=concurrency)

    async def call(i: int) -> None:
        rows = blocks[i % len(blocks)]
        tensor = triton_http.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=True)
        result = await client.infer(MODEL_NAME, [tensor])
        result.as_numpy("score")
        result.as_numpy("p_value")

    try:
        yield call
    finally:
        await client.close()


@asynccontextmanager
async def _raw_infer(target: str, model: str, blocks: list[NDArray[np.float32]],
                     outputs: tuple[str, ...]) -> AsyncIterator[Call]:
    """ModelInfer requests serialized once; answers left as bytes."""
    payloads = [
        service_pb2.ModelInferRequest(
            model_name=model,
            inputs=[service_pb2.ModelInferRequest.InferInputTensor(
                name="input", datatype="FP32", shape=list(rows.shape))],
            outputs=[service_pb2.ModelInferRequest.InferRequestedOutputTensor(name=name)
                     for name in outputs],
            raw_input_contents=[np.ascontiguousarray(rows, dtype="<f4").tobytes()],
        ).SerializeToString()
        for rows in blocks
    ]
    async with grpc.aio.insecure_channel(target, options=GRPC_OPTIONS) as channel:
        method = channel.unary_unary(MODEL_INFER)

        async def call(i: int) -> None:
            await method(payloads[i % len(payloads)], timeout=CALL_TIMEOUT_S)

        yield call


def _client(key: str, targets: Targets, blocks: list[NDArray[np.float32]],
            concurrency: int) -> AbstractAsyncContextManager[Call]:
    match key:
        case "a":
            return _score_v1(targets.latentwatch, blocks)
        case "b":
            return _kserve_grpc(targets.latentwatch, MODEL_NAME, blocks, ())
        case "c":
            return _kserve_rest(targets.rest, blocks, concurrency)
        case "d":
            return _score_v1(targets.on_triton, blocks)
        case "e":
            return _kserve_grpc(targets.triton, TRITON_SCORER, blocks, ("score",))
        case "b0":
            return _raw_infer(targets.latentwatch, MODEL_NAME, blocks, ())
        case "e0":
            return _raw_infer(targets.triton, TRITON_SCORER, blocks, ("score",))
    raise ValueError(f"unknown case {key!r}")


def measure(key: str, targets: Targets, X: NDArray[np.float32], rows: int, concurrency: int,
             warmup_s: float, duration_s: float, cpu: processes.CpuWatch) -> dict[str, Any]:
    count = 16 if rows > 1 else 256
    blocks = [X[(i * rows) % (X.shape[0] - rows + 1):][:rows] for i in range(count)]
    logger.info("measuring (%s) %s, %d-row requests x%d", key, CASES[key], rows, concurrency)
    with cpu:
        if key == "a0":  # exactly throughput.py's (b) and (c)
            result = run_load(targets.latentwatch, _requests(X, rows, count, ""),
                              rows_per_request=rows, concurrency=concurrency,
                              warmup_s=warmup_s, duration_s=duration_s)
        else:
            async def drive() -> LoadResult:
                async with _client(key, targets, blocks, concurrency) as call:
                    return await closed_loop(call, rows, concurrency, warmup_s, duration_s)

            result = asyncio.run(drive())
    # Rows per CPU-second of the benchmark's processes: less sensitive to other work meanwhile.
    per_cpu_s = result.rows_per_s / cpu.figures["benchmark_cores"]
    return {"what": CASES[key], **result.as_dict(), "rows_per_cpu_s": per_cpu_s,
            "cpu": cpu.figures}


