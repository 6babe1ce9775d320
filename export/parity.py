"""Parity: the exported ONNX graph must compute what the PyTorch model computes.

Tolerance, per output and batch (normwise): max|ort - torch| <= atol + rtol * max|torch|.

Why these numbers: float32 rounds at 6e-8 relative. A score is a sum over up to ~800 features
and K = 16 draws; ONNX Runtime reorders and fuses those sums, so honest exports differ from
PyTorch by about 1e-7 of the output's scale (observed on digits, MNIST and tabular models) and
at worst ~5e-5 (800 terms x 6e-8). rtol = 1e-4 sits above that worst case, while real defects
(a missing preprocessing step, different noise draws, a batch size baked into the graph) move
outputs by 1e-2 or more. The scale is the batch's largest |value| rather than each element's:
a Gaussian log-likelihood or a collapsed KL near 0 is a difference of large terms, and its
rounding error follows those terms. atol = 1e-4 covers outputs whose values are all near 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from latentwatch.export.errors import ExportError
from latentwatch.export.graphs import GraphDef, run_torch
from latentwatch.export.sessions import cpu_session, run_session

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParityConfig:
    batch_sizes: tuple[int, ...] = (1, 64)
    rtol: float = 1e-4
    atol: float = 1e-4


def parity_rows(rows: NDArray[np.float32], n_rows: int) -> NDArray[np.float32]:
    """n_rows rows spread evenly over `rows` (repeated when there are fewer): deterministic."""
    if len(rows) == 0:
        raise ExportError("parity needs at least one input row, got none")
    index = np.linspace(0, len(rows) - 1, num=n_rows).round().astype(np.int64)
    return np.ascontiguousarray(rows[index], dtype=np.float32)


def check_parity(
    graph: GraphDef,
    onnx_path: Path,
    inputs: NDArray[np.float32],
    config: ParityConfig = ParityConfig(),
) -> dict[str, float]:
    """Worst |ort - torch| per output over config.batch_sizes; ExportError when out of tolerance.

    `inputs` has at least max(batch_sizes) rows; batch b uses its first b rows.
    """
    session = cpu_session(onnx_path)
    worst: dict[str, float] = {name: 0.0 for name in graph.outputs}
    for batch in config.batch_sizes:
        if len(inputs) < batch:
            raise ExportError(f"{graph.name}: parity batch {batch} needs {batch} rows")
        rows = inputs[:batch]
        expected = {k: v.numpy() for k, v in run_torch(graph, torch.from_numpy(rows)).items()}
        actual = run_session(session, graph.input_name, rows)
        for name in graph.outputs:
            error = compare(expected[name], actual[name], config, where=(graph.name, name, batch))
            worst[name] = max(worst[name], error)
    logger.info(
        "parity %s at batches %s: worst abs error %s", graph.name, list(config.batch_sizes),
        ", ".join(f"{name} {err:.2g}" for name, err in worst.items()),
    )
    return worst


def compare(
    expected: NDArray[np.float32],
    actual: NDArray[np.float32],
    config: ParityConfig,
    where: Sequence[object],
) -> float:
    """max|actual - expected|, or ExportError naming graph, output and batch (`where`)."""
    graph, output, batch = where
    prefix = f"parity failed: graph {graph!r} output {output!r} at batch {batch}"
    if actual.shape != expected.shape:
        raise ExportError(
            f"{prefix}: shape {actual.shape} from ONNX Runtime, {expected.shape} from torch"
        )
    if not (np.isfinite(expected).all() and np.isfinite(actual).all()):
        raise ExportError(f"{prefix}: non-finite values (torch or ONNX Runtime)")
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    error = float(diff.max(initial=0.0))
    allowed = config.atol + config.rtol * float(np.abs(expected).max(initial=0.0))
    if error > allowed:
        raise ExportError(
            f"{prefix}: max |ort - torch| = {error:.3g} exceeds {allowed:.3g} "
            f"(atol {config.atol:g} + rtol {config.rtol:g} * max|torch|)"
        )
    return error
