"""Closed-loop gRPC load: N concurrent callers, each sending its next request when one returns.

Requests are serialized once up front and responses are left as bytes, so the client spends
its CPU on the transport only (client and server share the machine's cores).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np
import psutil

SCORE_METHOD = "/latentwatch.v1.Latentwatch/Score"
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CALL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    rows_per_request: int
    duration_s: float
    requests: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_mean_ms: float

    @property
    def rows_per_s(self) -> float:
        return self.requests * self.rows_per_request / self.duration_s

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s

    def as_dict(self) -> dict[str, float]:
        return {
            "concurrency": self.concurrency,
            "rows_per_request": self.rows_per_request,
            "duration_s": self.duration_s,
            "requests": self.requests,
            "rows_per_s": self.rows_per_s,
            "requests_per_s": self.requests_per_s,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "latency_mean_ms": self.latency_mean_ms,
        }


async def _drive(
    target: str,
    payloads: Sequence[bytes],
    rows_per_request: int,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> LoadResult:
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=CALL_TIMEOUT_S)
        call = channel.unary_unary(SCORE_METHOD)  # bytes in, bytes out
        latencies_s: list[float] = []
        start_s = time.perf_counter()
        window_start_s = start_s + warmup_s
        window_end_s = window_start_s + duration_s

        async def caller(first: int) -> None:
            index = first
            while True:
                sent_s = time.perf_counter()
                if sent_s >= window_end_s:
                    return
                await call(payloads[index % len(payloads)], timeout=CALL_TIMEOUT_S)
                done_s = time.perf_counter()
                # Count a call by when it completed: the window holds exactly its completions.
                if window_start_s <= done_s < window_end_s:
                    latencies_s.append(done_s - sent_s)
                index += concurrency

        await asyncio.gather(*(caller(i) for i in range(concurrency)))
    lat_ms = np.asarray(latencies_s) * 1e3
    if lat_ms.size == 0:
        raise RuntimeError(f"no call to {target} completed inside the {duration_s} s window")
    return LoadResult(
        concurrency=concurrency,
        rows_per_request=rows_per_request,
        duration_s=duration_s,
        requests=int(lat_ms.size),
        latency_p50_ms=float(np.percentile(lat_ms, 50)),
        latency_p99_ms=float(np.percentile(lat_ms, 99)),
        latency_mean_ms=float(lat_ms.mean()),
    )


def run_load(
    target: str,
    payloads: Sequence[bytes],
    *,
    rows_per_request: int,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> LoadResult:
    """Drives Score at `target` for warmup_s, then measures for duration_s."""
    return asyncio.run(
        _drive(target, payloads, rows_per_request, concurrency, warmup_s, duration_s)
    )


def call_once(target: str, payload: bytes) -> bytes:
    """One Score call with the same raw method the load uses; returns the response bytes."""
    with grpc.insecure_channel(
        target, options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    ) as channel:
        grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT_S)
        call = channel.unary_unary(SCORE_METHOD)
        return bytes(call(payload, timeout=CALL_TIMEOUT_S))


class PeakRss:
    """Samples a process tree's resident memory in a background thread; keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self._process = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_bytes = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                tree = [self._process, *self._process.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in tree)
            except psutil.Error:
                return  # the process ended
            self.peak_bytes = max(self.peak_bytes, rss)
            self._stop.wait(self._interval_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
