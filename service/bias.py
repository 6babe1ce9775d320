"""The BiasReport flow: encode a stream of row chunks, then build the report (latentwatch.bias).

Transport-agnostic like service/core.py, which resolves the version, takes one of its
ReportSlots and delegates to `bias_report`; the servicer turns protobuf chunks into BiasChunk and
the result back into protobuf. What one report may hold is BiasLimits, from the settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.accumulator import BiasAccumulator, BiasReport
from latentwatch.bias.groups import LabelLimits
from latentwatch.bias.options import BiasOptions
from latentwatch.errors import InvalidInput, QueueFull
from latentwatch.scoring.contract import validate_rows
from latentwatch.service.batcher import Outputs
from latentwatch.service.repository import ModelVersion, decode
from latentwatch.service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Chunks of one bias report encoding at once while the next ones are read. More would not
# encode faster (a batcher runs one batch at a time); these overlap reading with encoding.
BIAS_WINDOW_CHUNKS = 4
# A bias report is a batch job: when the encoder queue is full it yields to interactive callers
# and retries (backing off from 1 ms to 50 ms) for this long before failing RESOURCE_EXHAUSTED.
BIAS_QUEUE_WAIT_S = 30.0
# Per-chunk work on more cells than this (rows x group columns, rows x latent width) runs in a
# thread, so that a large chunk does not hold up every other call; below it the hop costs more.
INLINE_CELLS = 16_384


@dataclass(frozen=True)
class BiasLimits:
    """What one bias report may hold or keep in flight."""

    max_rows: int
    window_rows: int  # rows encoding at once
    labels: LabelLimits  # label and id length, distinct labels per column, group columns

    @classmethod
    def from_settings(cls, settings: Settings) -> BiasLimits:
        return cls(
            max_rows=settings.bias_max_rows,
            # At most half an encoder queue in flight, so other callers of the same batcher
            # still get in; when others fill the queue, the report's chunks wait and retry.
            window_rows=max(1, settings.max_queue_rows // 2),
            labels=LabelLimits(
                max_chars=settings.bias_max_label_chars,
                max_values=settings.bias_max_group_values,
                max_columns=settings.bias_max_group_columns,
            ),
        )


class ReportSlots:
    """At most `limit` bias reports at once; the next is refused at once, not queued: a report
    holds its rows' means for as long as its stream lasts, so waiting ones would only pile up.
    Used on the event loop only (no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    @contextmanager
    def taken(self) -> Iterator[None]:
        """One slot for the block, given back however the block ends (cancelled included)."""
        if self.in_use >= self.limit:
            raise QueueFull(
                f"{self.in_use} bias reports are running, the most this server runs at once "
                f"(LATENTWATCH_MAX_CONCURRENT_BIAS_REPORTS = {self.limit}); retry when one ends"
            )
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1


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
    options: BiasOptions | None,
    limits: BiasLimits,
) -> BiasResult:
    """Encodes every chunk's rows (in order), then builds the report (latentwatch.bias).

    The options are validated here, once, before any row is read. `options.decoded_rows` of the
    sparsest and densest rows are decoded at their latent means when the version has a decoder
    graph (asking for some of a version without one is refused), and come back in the data's
    units (`_decode_in_data_units`). Each chunk's ids and labels are checked and turned into
    codes before its rows are encoded.
    """
    options = (options or BiasOptions()).validated()
    if options.n_decoded and mv.decoder is None:
        raise InvalidInput(
            f"n_decoded: {mv.name}:{mv.version} has no decoder graph, so no rows can be "
            "decoded; leave n_decoded unset or 0"
        )
    n_decoded = options.decoded_rows
    labels = limits.labels
    accumulator = BiasAccumulator(
        mv.manifest.require_latent().latent_dim, max_rows=limits.max_rows,
        max_group_values=labels.max_values, max_group_columns=labels.max_columns,
        max_label_chars=labels.max_chars,
    )
    means = await _accumulate(mv, chunks, accumulator, limits)
    if accumulator.n_rows == 0:
        raise InvalidInput("the stream carried no rows; send rows in the input of each chunk")
    # Histograms and group statistics over up to millions of rows: not on the event loop.
    report = await asyncio.to_thread(accumulator.finish, options, mv.reference)
    report = report.with_sparsest_latent(_rows_at(means, report.sparsest))
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
    limits: BiasLimits,
) -> list[NDArray[np.float32]]:
    """Feeds the accumulator in input order: a chunk's labels as it arrives, its means once
    encoded. Returns the means it holds, chunk by chunk (the same arrays, so keeping them costs
    no memory)."""
    max_rows, window_rows = limits.max_rows, limits.window_rows
    window: deque[tuple[int, asyncio.Future[Outputs]]] = deque()
    in_flight = received = 0
    means: list[NDArray[np.float32]] = []

    async def add_oldest() -> int:
        n, encoding = window.popleft()
        outputs = await encoding
        # A copy: the slice would keep the whole batch's output alive.
        mu = np.array(outputs["latent_mu"], dtype=np.float32)
        await _off_loop(mu.size, accumulator.add_means, mu, outputs.get("latent_logvar"))
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
            # Before encoding: bad labels cost no encoder time, and the strings become codes now.
            cells = n * (bool(chunk.ids) + len(chunk.groups or ()))
            await _off_loop(cells, accumulator.add_labels, n, chunk.ids, chunk.groups)
            while window and (len(window) >= BIAS_WINDOW_CHUNKS or in_flight + n > window_rows):
                in_flight -= await add_oldest()
            window.append((n, asyncio.ensure_future(_encode_patiently(mv, rows))))
            in_flight += n
        while window:
            await add_oldest()
    finally:
        for _, encoding in window:
            if encoding.done() and not encoding.cancelled():
                encoding.exception()  # retrieved: the first error is the one reported
            else:
                encoding.cancel()
    return means


async def _off_loop(cells: int, work: Callable[..., T], *args: object) -> T:
    """`work(*args)` here when small, else in a thread; either way one at a time per report."""
    if cells <= INLINE_CELLS:
        return work(*args)
    return await asyncio.to_thread(work, *args)


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
