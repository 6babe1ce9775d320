"""Score's explanations on a serving version: the scorer's latent_mu through the batched
decoder graph, each feature's NLL standardised (latentwatch.scoring.explain), the top k kept.

Checked before any graph runs (`explain_k`): a version without explain.npz (exported before
explanations, or without a decoder) refuses with FAILED_PRECONDITION, a k beyond the features
with INVALID_ARGUMENT.
"""

from __future__ import annotations

import numpy as np

from latentwatch.errors import FailedPrecondition, quote
from latentwatch.scoring.explain import ExplainStats, Explanations, resolve_top_k, top_features
from latentwatch.service.batcher import BatchSlice
from latentwatch.service.repository import ModelVersion


def can_explain(mv: ModelVersion) -> bool:
    """Whether the version explains rows: explain.npz and a decoder (ModelInfo.explains)."""
    return mv.explain is not None and mv.decoding is not None


def explain_stats(mv: ModelVersion) -> ExplainStats:
    """The version's statistics; FailedPrecondition when it has none."""
    mv.pipeline  # noqa: B018  InvalidInput, naming its capabilities, for a version that cannot score
    if not can_explain(mv) or mv.explain is None:
        raise FailedPrecondition(
            f"model {quote(mv.name)} version {quote(mv.version)} cannot explain rows: it was "
            "exported without per-feature statistics (explain.npz); export it again to explain "
            "(ModelInfo.explains says which versions can)"
        )
    return mv.explain


def explain_k(mv: ModelVersion, top_k: int) -> int:
    """The k a request's explain_top_k asks of this version (0: the default)."""
    return resolve_top_k(top_k, explain_stats(mv).n_features)


async def explain_rows(mv: ModelVersion, part: BatchSlice, k: int) -> Explanations:
    """Top-k features of the caller's rows of a scorer batch (`k` from `explain_k`)."""
    stats = explain_stats(mv)
    assert mv.decoding is not None  # explain_stats checked
    latent = np.ascontiguousarray(part["latent_mu"], dtype=np.float32)  # (n, Z)
    decoded = await mv.decoding.submit(latent)
    recon = decoded[mv.manifest.graphs["decoder"].outputs[0].name]  # (n, F), model space
    x = mv.manifest.input.preprocessing.apply(part.rows)  # (n, F), as the graphs see it
    return top_features(stats.contributions(x, recon), k, mv.manifest.input.feature_names)
