"""Score a model version in-process, without a server: for benchmarks and batch jobs.

It loads a version exactly as the server does (manifest and sha256 checks, calibration, second
stage, ONNX Runtime on the same provider choice) and computes every score kind and its conformal
p-values with the same functions, so its numbers are the numbers the service returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from latentwatch.repository.manifest import Manifest
from latentwatch.scoring.contract import InputContract, p_values, validate_rows
from latentwatch.scoring.second_stage import KIND as STAGE_KIND
from latentwatch.scoring.second_stage import SecondStage
from latentwatch.service.repository import (
    VersionRefused,
    read_calibration,
    read_manifest,
    read_second_stage,
)
from latentwatch.service.runtime import OrtRuntime

# Rows per ONNX Runtime run: bounds memory for large inputs (K decoder passes per row).
CHUNK_ROWS = 1024


@dataclass(frozen=True, eq=False)
class OfflineScorer:
    manifest: Manifest
    runtime: OrtRuntime
    calibration: dict[str, NDArray[np.float64]]  # kind -> ascending calibration scores
    second_stage: SecondStage | None

    @classmethod
    def from_version_dir(cls, version_dir: Path, intra_op_threads: int = 0) -> OfflineScorer:
        """Loads `<repo>/<model>/<version>/`; raises VersionRefused with the reason if unusable."""
        version_dir = Path(version_dir)
        manifest, _ = read_manifest(version_dir.parent.name, version_dir.name, version_dir)
        calibration = read_calibration(version_dir, manifest)
        stage = read_second_stage(version_dir, manifest)
        try:
            runtime = OrtRuntime(version_dir / manifest.graphs["scorer"].file, intra_op_threads)
        except Exception as err:  # onnxruntime raises several unrelated types for bad graphs
            raise VersionRefused(f"ONNX Runtime cannot load the scorer: {err}") from err
        return cls(manifest, runtime, calibration, stage)

    @property
    def default_score_kind(self) -> str:
        return self.manifest.default_score_kind

    @property
    def score_kinds(self) -> list[str]:
        return list(self.manifest.score_kinds)

    def score(self, array: NDArray) -> dict[str, NDArray[np.float64]]:
        """Every score kind for rows (N, F) (or images), each (N,) float64."""
        contract = InputContract.from_manifest(self.manifest, max_request_rows=len(array))
        rows = validate_rows(array, contract)
        graph_kinds = [k for k in self.score_kinds if k != STAGE_KIND]
        parts: list[dict[str, NDArray[np.float64]]] = []
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = rows[start : start + CHUNK_ROWS]
            outputs = self.runtime.run({self.manifest.input.name: chunk})
            scores = {k: outputs[k].astype(np.float64) for k in graph_kinds}
            if self.second_stage is not None:
                model_rows = self.manifest.input.preprocessing.apply(chunk)
                scores[STAGE_KIND] = self.second_stage.score(outputs, model_rows)
            parts.append(scores)
        return {k: np.concatenate([p[k] for p in parts]) for k in self.score_kinds}

    def p_values(self, scores: dict[str, NDArray]) -> dict[str, NDArray[np.float64]]:
        """Conformal p-values of each kind in `scores` against that kind's calibration."""
        return {k: p_values(self.calibration[k], v) for k, v in scores.items()}
