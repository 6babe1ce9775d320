"""The served model repository: the versions loaded (service/loader.py), and those refused."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.drift import LatentReference
from latentwatch.errors import InvalidInput, ModelNotFound, quote
from latentwatch.repository.manifest import Manifest
from latentwatch.scoring.contract import InputContract
from latentwatch.scoring.explain import ExplainStats
from latentwatch.scoring.pipeline import ScoringPipeline
from latentwatch.service.batch_scoring import BatchScoring
from latentwatch.service.batcher import MicroBatcher
from latentwatch.service.metrics import VersionMetrics
from latentwatch.service.runtime import Runtime, input_names

log = logging.getLogger(__name__)

LISTED = 20  # models (or versions) a "not found" message names; the rest are counted


def _listed(items: Iterable[str], separator: str = ", ") -> str:
    """The first LISTED items and how many more there are ("" for none)."""
    listed = list(items)
    more = f"{separator}and {len(listed) - LISTED:,} more" if len(listed) > LISTED else ""
    return separator.join(listed[:LISTED]) + more


@dataclass(frozen=True)
class ScoringParts:
    """What Score, Encode and BiasReport run on; a version that only generates or translates
    has none."""

    pipeline: ScoringPipeline  # score kinds and p-values from the scorer's outputs
    scorer: MicroBatcher
    scoring: BatchScoring  # the pipeline over the scorer's batches, once per batch
    encoder: MicroBatcher  # the encoder graph, or the scorer when there is none


@dataclass
class ModelVersion:
    name: str
    version: str
    manifest: Manifest
    manifest_json: str
    contract: InputContract
    provider: str
    intra_op_threads: int
    # None for a version without the score and encode capabilities (gan, cgan, pix2pix).
    scoring_parts: ScoringParts | None
    metrics: VersionMetrics
    # latent (k, Z) -> decoder means (k, F) in model space; None without a decoder graph.
    decoder: Runtime | None = None
    # The training data's latent summary for bias-report drift; None when not exported.
    reference: LatentReference | None = None
    # The decoder graph batched (Generate and Traverse of VAE families); None without one.
    decoding: MicroBatcher | None = None
    # z [, label] rows -> samples in data units (service/generative_graphs.py); None without one.
    generator: MicroBatcher | None = None
    # (n, C, H, W) images -> translated images in data units; None without a translator graph.
    translator: MicroBatcher | None = None
    runtimes: tuple[Runtime, ...] = ()  # every runtime loaded, closed with the repository
    # Per-feature statistics for Score's explanations (service/explanations.py); None: none.
    explain: ExplainStats | None = None
    # Calls holding this version now: a version unloaded by a reload closes when they end.
    _leases: int = field(default=0, repr=False)
    _idle: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @contextmanager
    def lease(self) -> Iterator[ModelVersion]:
        """Holds the version for the `with` block (one call)."""
        self._leases += 1
        self._idle.clear()
        try:
            yield self
        finally:
            self._leases -= 1
            if not self._leases:
                self._idle.set()

    async def idle(self) -> None:
        """Returns when no call holds the version."""
        if self._leases:
            await self._idle.wait()

    @property
    def pipeline(self) -> ScoringPipeline:
        return self._scoring_parts("score").pipeline

    @property
    def scorer(self) -> MicroBatcher:
        return self._scoring_parts("score").scorer

    @property
    def scoring(self) -> BatchScoring:
        return self._scoring_parts("score").scoring

    @property
    def encoder(self) -> MicroBatcher:
        return self._scoring_parts("encode").encoder

    def _scoring_parts(self, capability: str) -> ScoringParts:
        """The scoring parts; InvalidInput, naming what the version can do, when it has none."""
        if self.scoring_parts is None:
            raise InvalidInput(
                f"model {quote(self.name)} version {quote(self.version)} cannot {capability}: "
                f"its capabilities are {self.manifest.capabilities}"
            )
        return self.scoring_parts

    @property
    def batchers(self) -> tuple[MicroBatcher, ...]:
        """Every batcher of the version, each once."""
        found: list[MicroBatcher | None] = [self.decoding, self.generator, self.translator]
        if self.scoring_parts is not None:
            found[:0] = [self.scoring_parts.scorer, self.scoring_parts.encoder]
        return tuple(dict.fromkeys(b for b in found if b is not None))

    async def close(self) -> None:
        """Stops its batchers (calls still queued fail with NotReady) and closes its runtimes."""
        for batcher in self.batchers:
            await batcher.close()
        for runtime in self.runtimes:
            await runtime.close()


@dataclass(frozen=True)
class Refusal:
    name: str
    version: str
    reason: str


@dataclass
class ModelRepository:
    path: Path
    versions: dict[str, dict[str, ModelVersion]] = field(default_factory=dict)  # ascending
    refused: list[Refusal] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(v) for v in self.versions.values())

    def get(self, name: str, version: str = "") -> ModelVersion:
        """The named version; "" selects the latest (largest) loaded version."""
        versions = self.versions.get(name)
        if versions is None:
            known = _listed(
                (f"{n} (versions {_listed(v)})" for n, v in self.versions.items()), "; "
            ) or "no models"
            if not name:
                raise InvalidInput(f"model_name is empty; this server has: {known}")
            raise ModelNotFound(f"no model {quote(name)}; this server has: {known}")
        if not version:
            return versions[next(reversed(versions))]
        found = versions.get(version)
        if found is None:
            refused = [r.version for r in self.refused if r.name == name and r.version == version]
            note = " (it exists but was refused at load: see the server log)" if refused else ""
            raise ModelNotFound(
                f"model {quote(name)} has no version {quote(version)}{note}; loaded versions: "
                f"{_listed(versions)}"
            )
        return found

    async def close(self) -> None:
        for versions in self.versions.values():
            for v in versions.values():
                await v.close()


async def decode(
    runtime: Runtime, manifest: Manifest, latent: NDArray
) -> NDArray[np.float32]:
    """(k, Z) latent points -> (k, F) decoder means in model space (on the event loop: the
    runtime runs its graph off it)."""
    z = np.ascontiguousarray(latent, dtype=np.float32)
    outputs = await runtime.infer({input_names(runtime)[0]: z})
    return np.asarray(outputs[manifest.graphs["decoder"].outputs[0].name], dtype=np.float32)
