"""Reading format 1 manifests: versions exported before format 2 still load and serve.

Format 1 kept the latent fields (latent_dim, beta, decoder, n_importance_samples) and the
scoring fields (score_kinds, default_score_kind, default_score_reason, second_stage,
calibration) at the top level, required a scorer graph, and named no capabilities: every
version could score and encode, and decode when it had a decoder graph.
"""

from __future__ import annotations

from typing import Any

V1_LATENT_FIELDS = ("latent_dim", "beta", "decoder", "n_importance_samples")
V1_SCORING_FIELDS = (
    "score_kinds", "default_score_kind", "default_score_reason", "second_stage", "calibration",
)


def is_v1(data: Any) -> bool:
    """A format 1 manifest as parsed JSON: format_version 1, or none and no capabilities."""
    if not isinstance(data, dict):
        return False
    version = data.get("format_version")
    return version == 1 or (version is None and "capabilities" not in data)


def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """The format 2 form of a format 1 manifest dict (values unchanged, only regrouped)."""
    out = {k: v for k, v in data.items() if k not in (*V1_LATENT_FIELDS, *V1_SCORING_FIELDS)}
    out["format_version"] = 2
    out["latent"] = {k: data[k] for k in V1_LATENT_FIELDS if k in data}
    out["scoring"] = {k: data[k] for k in V1_SCORING_FIELDS if k in data}
    graphs = data.get("graphs")
    capabilities = ["score", "encode"]
    if isinstance(graphs, dict) and "decoder" in graphs:
        capabilities.append("decode")
    out["capabilities"] = capabilities
    return out
