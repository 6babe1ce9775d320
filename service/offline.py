"""Score a model version in-process, without a server: for benchmarks and batch jobs.

It reads a version exactly as the server does (repository/reader.py: manifest and sha256
checks, calibration, second stage), runs the scorer on ONNX Runtime with the same provider
choice, and computes every score kind and its conformal p-values through the same
ScoringPipeline, so its numbers are the numbers the service returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import VersionRefused
from latentwatch.repository.manifest import Manifest
from latentwatch.repository.reader import read_version
from latentwatch.scoring.contract import InputContract, validate_rows
from latentwatch.scoring.pipeline import ScoringPipeline
from latentwatch.service.ort_runtime import OrtRuntime

# Rows per ONNX Runtime run: bounds memory for large inputs (K decoder passes per row).
CHUNK_ROWS = 1024


@dataclass(frozen=True, eq=False)
class OfflineScorer:
    manifest: Manifest
    runtime: OrtRuntime
    pipeline: ScoringPipeline

    @classmethod
    def from_version_dir(cls, version_dir: Path, intra_op_threads: int = 0) -> OfflineScorer:
        """Loads `<repo>/<model>/<version>/`; raises VersionRefused with the reason if unusable."""
        version_dir = Path(version_dir)
        files = read_version(version_dir.parent.name, version_dir.name, version_dir)
        try:
            runtime = OrtRuntime.open(files.graph_path("scorer"), intra_op_threads)
        except Exception as err:  # onnxruntime raises several unrelated types for bad graphs
            raise VersionRefused(f"ONNX Runtime cannot load the scorer: {err}") from err
        return cls(files.manifest, runtime, files.pipeline())

    @property
    def default_score_kind(self) -> str:
        return self.pipeline.default_kind

    @property
    def score_kinds(self) -> list[str]:
        return list(self.pipeline.kinds)

    def score(
        self, array: NDArray, kinds: Sequence[str] | None = None
    ) -> dict[str, NDArray[np.float64]]:
        """The score `kinds` (default: every kind) for rows (N, F) (or images), each (N,)
        float64."""
        contract = InputContract.from_manifest(self.manifest, max_request_rows=len(array))
        rows = validate_rows(array, contract)
        kinds = self.pipeline.kinds if kinds is None else self.pipeline.resolve_kinds(kinds)
        parts: list[dict[str, NDArray[np.float64]]] = []
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = rows[start : start + CHUNK_ROWS]
            outputs = self.runtime.run({self.manifest.input.name: chunk})
            parts.append(self.pipeline.scores(outputs, chunk, kinds))
        return {k: np.concatenate([p[k] for p in parts]) for k in kinds}

    def p_values(self, scores: dict[str, NDArray]) -> dict[str, NDArray[np.float64]]:
        """Conformal p-values of each kind in `scores` against that kind's calibration."""
        return {k: self.pipeline.p_values(k, v) for k, v in scores.items()}
