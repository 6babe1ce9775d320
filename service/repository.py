"""The served model repository: the versions loaded (service/loader.py), and those refused."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.drift import LatentReference
from latentwatch.errors import ModelNotFound
from latentwatch.repository.manifest import Manifest
from latentwatch.scoring.contract import InputContract
from latentwatch.scoring.pipeline import ScoringPipeline
from latentwatch.service.batch_scoring import BatchScoring
from latentwatch.service.batcher import MicroBatcher
from latentwatch.service.metrics import VersionMetrics
from latentwatch.service.runtime import Runtime, input_names

log = logging.getLogger(__name__)


@dataclass
class ModelVersion:
    name: str
    version: str
    manifest: Manifest
    manifest_json: str
    contract: InputContract
    provider: str
    intra_op_threads: int
    pipeline: ScoringPipeline  # score kinds and p-values from the scorer's outputs
    scorer: MicroBatcher
    scoring: BatchScoring  # the pipeline over the scorer's batches, once per batch
    encoder: MicroBatcher  # the encoder graph, or the scorer when there is none
    metrics: VersionMetrics
    # latent (k, Z) -> decoder means (k, F) in model space; None without a decoder graph.
    decoder: Runtime | None = None
    # The training data's latent summary for bias-report drift; None when not exported.
    reference: LatentReference | None = None
    runtimes: tuple[Runtime, ...] = ()  # every runtime loaded, closed with the repository


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
            known = "; ".join(f"{n} (versions {', '.join(v)})" for n, v in self.versions.items())
            raise ModelNotFound(f"no model {name!r}; this server has: {known or 'no models'}")
        if not version:
            return versions[next(reversed(versions))]
        found = versions.get(version)
        if found is None:
            refused = [r.version for r in self.refused if r.name == name and r.version == version]
            note = " (it exists but was refused at load: see the server log)" if refused else ""
            raise ModelNotFound(
                f"model {name!r} has no version {version!r}{note}; loaded versions: "
                f"{', '.join(versions)}"
            )
        return found

    async def close(self) -> None:
        for versions in self.versions.values():
            for v in versions.values():
                await v.scorer.close()
                if v.encoder is not v.scorer:
                    await v.encoder.close()
                for runtime in v.runtimes:
                    await runtime.close()


async def decode(
    runtime: Runtime, manifest: Manifest, latent: NDArray
) -> NDArray[np.float32]:
    """(k, Z) latent points -> (k, F) decoder means in model space (on the event loop: the
    runtime runs its graph off it)."""
    z = np.ascontiguousarray(latent, dtype=np.float32)
    outputs = await runtime.infer({input_names(runtime)[0]: z})
    return np.asarray(outputs[manifest.graphs["decoder"].outputs[0].name], dtype=np.float32)
