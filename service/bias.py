"""The BiasReport flow: encode a stream of row chunks, then build the report (latentwatch.bias).

Transport-agnostic like service/core.py, which delegates to `bias_report` after resolving the
version; the servicer turns protobuf chunks into BiasChunk and the result back into protobuf.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.accumulator import BiasAccumulator, BiasReport
from latentwatch.bias.options import BiasOptions
from latentwatch.errors import InvalidInput, QueueFull
from latentwatch.scoring.contract import validate_rows
from latentwatch.service.batcher import Outputs
from latentwatch.service.repository import ModelVersion, decode

log = logging.getLogger(__name__)

# Chunks of one bias report encoding at once while the next ones are read. More would not
# encode faster (a batcher runs one batch at a time); these overlap reading with encoding.
BIAS_WINDOW_CHUNKS = 4
# A bias report is a batch job: when the encoder queue is full it yields to interactive callers
# and retries (backing off from 1 ms to 50 ms) for this long before failing RESOURCE_EXHAUSTED.
BIAS_QUEUE_WAIT_S = 30.0


@dataclass(frozen=True)
class BiasChunk:
    """Rows of one BiasReport message, with their ids and group labels when given."""

    array: NDArray | None  # (n, ...) rows as sent, checked like Score's; None: no rows
    ids: Sequence[str] | None = None  # one per row
    groups: Mapping[str, Sequence[str]] | None = None  # column -> one label per row


@dataclass(frozen=True)
class BiasResult:
    model_name: str
    model_version: str
    report: BiasReport


async def bias_report(
    mv: ModelVersion,
    chunks: AsyncIterator[BiasChunk],
    options: BiasOptions | None = None,
    *,
    max_rows: int,
    window_rows: int,
) -> BiasResult:
    """Encodes every chunk's rows (in order), then builds the report (latentwatch.bias).

    The options are validated here, once, before any row is read. `options.decoded_rows` of the
    sparsest and densest rows are decoded at their latent means when the version has a decoder
    graph, and come back in the data's units (`_decode_in_data_units`). At most `max_rows` rows
    are taken, and at most `window_rows` are encoding at once.
    """
    options = (options or BiasOptions()).validated()
    n_decoded = options.decoded_rows
    accumulator = BiasAccumulator(mv.manifest.require_latent().latent_dim, max_rows=max_rows)
    means = await _accumulate(mv, chunks, accumulator, max_rows, window_rows)
    if accumulator.n_rows == 0:
        raise InvalidInput("the stream carried no rows; send rows in the input of each chunk")
    # Histograms and group statistics over up to millions of rows: not on the event loop.
    report = await asyncio.to_thread(accumulator.finish, options, mv.reference)
    if n_decoded and mv.decoder is not None:
        k = min(n_decoded, report.sparsest.shape[0])
        positions = np.concatenate([report.sparsest[:k], report.densest[:k]])
        decoded = await _decode_in_data_units(mv, _rows_at(means, positions))
        report = report.with_decoded(decoded[:k], decoded[k:])
    mv.metrics.observe_bias(report)
    log.info(
        "bias report on %s:%s: %d rows, effective sample size %.1f, drift %s",
        mv.name, mv.version, report.n_rows, report.effective_sample_size,
        "n/a" if report.drift is None else f"{report.drift.overall:.3f}",
    )
    return BiasResult(mv.name, mv.version, report)


async def _accumulate(
    mv: ModelVersion,
    chunks: AsyncIterator[BiasChunk],
    accumulator: BiasAccumulator,
    max_rows: int,
    window_rows: int,
) -> list[NDArray[np.float32]]:
    """Feeds the accumulator in input order; returns the means it holds, chunk by chunk
    (the same arrays, so keeping them costs no memory)."""
    window: deque[tuple[BiasChunk, int, asyncio.Future[Outputs]]] = deque()
    in_flight = received = 0
    means: list[NDArray[np.float32]] = []

    async def add_oldest() -> int:
        chunk, n, encoding = window.popleft()
        outputs = await encoding
        # A copy: the slice would keep the whole batch's output alive.
        mu = np.array(outputs["latent_mu"], dtype=np.float32)
        accumulator.add(mu, outputs.get("latent_logvar"), chunk.ids, chunk.groups)
        means.append(mu)
        return n

    try:
        async for index, chunk in _enumerate(chunks):
            what = f"chunk {index} input"
            if chunk.array is None:  # e.g. a first message with the options only
                if chunk.ids or chunk.groups:
                    raise InvalidInput(f"{what}: missing, but the chunk has ids or groups")
                continue
            rows = validate_rows(chunk.array, mv.contract, what=what)
            n = rows.shape[0]
            received += n
            if received > max_rows:
                raise InvalidInput(
                    f"a bias report takes at most {max_rows:,} rows "
                    f"(LATENTWATCH_BIAS_MAX_ROWS); this stream sent more"
                )
            while window and (len(window) >= BIAS_WINDOW_CHUNKS or in_flight + n > window_rows):
                in_flight -= await add_oldest()
            window.append((chunk, n, asyncio.ensure_future(_encode_patiently(mv, rows))))
            in_flight += n
        while window:
            await add_oldest()
    finally:
        for _, _, encoding in window:
            if encoding.done() and not encoding.cancelled():
                encoding.exception()  # retrieved: the first error is the one reported
            else:
                encoding.cancel()
    return means


async def _decode_in_data_units(
    mv: ModelVersion, latent: NDArray[np.float32]
) -> NDArray[np.float32]:
    """(k, Z) latent means -> the decoder's means in the data's units, as the rows were sent:
    (k, F) rows, or (k, C, H, W) images for image models. The decoder runs off the event loop;
    inverting the preprocessing of these few rows runs on it."""
    assert mv.decoder is not None  # the caller checked
    model_space = await decode(mv.decoder, mv.manifest, latent)  # (k, F)
    data = mv.manifest.input.preprocessing.invert(model_space).astype(np.float32)
    image_shape = mv.manifest.input.image_shape
    return data.reshape(-1, *image_shape) if image_shape else data


def _rows_at(blocks: Sequence[NDArray[np.float32]], positions: NDArray[np.int64]) -> NDArray:
    """Rows at global `positions` of row blocks stacked in order, without stacking them."""
    starts = np.cumsum([0] + [b.shape[0] for b in blocks])
    block = np.searchsorted(starts, positions, "right") - 1
    width = blocks[0].shape[1]
    out = np.empty((positions.shape[0], width), dtype=np.float32)  # (k, Z)
    for i, (b, p) in enumerate(zip(block, positions, strict=True)):
        out[i] = blocks[b][p - starts[b]]
    return out


async def _encode_patiently(mv: ModelVersion, rows: NDArray[np.float32]) -> Outputs:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + BIAS_QUEUE_WAIT_S
    pause_s = 0.001
    while True:
        try:
            return await mv.encoder.submit(rows)
        except QueueFull:
            if loop.time() + pause_s > give_up:
                raise
            await asyncio.sleep(pause_s)
            pause_s = min(2 * pause_s, 0.05)


async def _enumerate(items: AsyncIterator[BiasChunk]) -> AsyncIterator[tuple[int, BiasChunk]]:
    index = 0
    async for item in items:
        yield index, item
        index += 1
