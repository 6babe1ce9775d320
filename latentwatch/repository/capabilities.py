"""What a manifest's capabilities require of its graphs and sections (format 2).

A version names what it can do; each capability needs the graphs and sections that do it, and
a section no capability uses is refused too, so that a manifest cannot claim more (or carry
more) than it serves. The family (latentwatch.families) bounds the capabilities of its kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from latentwatch.families import family

if TYPE_CHECKING:  # manifest.py imports this module
    from latentwatch.repository.manifest import Manifest

# Capability -> graphs of which at least one must be present.
NEEDED_GRAPHS: dict[str, tuple[str, ...]] = {
    "score": ("scorer",),
    "encode": ("encoder", "scorer"),
    "decode": ("decoder",),
    "generate": ("generator",),
    "translate": ("translator",),
}


def check_capabilities(manifest: Manifest) -> None:
    """ValueError, in words, when capabilities, graphs and sections disagree."""
    caps = manifest.capabilities
    if len(set(caps)) != len(caps):
        raise ValueError(f"capabilities {caps} name one capability twice")
    offered = family(manifest.model_kind).capabilities
    if extra := [c for c in caps if c not in offered]:
        raise ValueError(
            f"capabilities {extra}: model kind {manifest.model_kind!r} offers only {list(offered)}"
        )
    for cap in caps:
        if not any(g in manifest.graphs for g in NEEDED_GRAPHS[cap]):
            raise ValueError(
                f"capability {cap!r} needs a {' or '.join(map(repr, NEEDED_GRAPHS[cap]))} graph; "
                f"graphs: {sorted(manifest.graphs)}"
            )
    _check_encode(manifest)
    _check_sections(manifest)


def _outputs(manifest: Manifest, graph: str) -> set[str]:
    spec = manifest.graphs.get(graph)
    return {t.name for t in spec.outputs} if spec is not None else set()


def _check_encode(manifest: Manifest) -> None:
    if "encode" in manifest.capabilities and "encoder" not in manifest.graphs:
        if "latent_mu" not in _outputs(manifest, "scorer"):
            raise ValueError(
                "capability 'encode' needs an 'encoder' graph or a scorer with a 'latent_mu' "
                "output"
            )


def _check_sections(manifest: Manifest) -> None:
    caps = set(manifest.capabilities)
    scoring = manifest.scoring
    if ("score" in caps) != (scoring is not None):
        raise ValueError(
            "capability 'score' and the scoring section go together: "
            f"{'no scoring section' if scoring is None else 'a scoring section but no score'}"
        )
    if scoring is not None:
        computed = {scoring.second_stage.kind} if scoring.second_stage else set()
        if not set(scoring.score_kinds) <= _outputs(manifest, "scorer") | computed:
            raise ValueError("every score kind must be a scorer output or the second stage's")
    latent_caps = caps & {"encode", "decode"}
    if latent_caps and manifest.latent is None:
        raise ValueError(f"capabilities {sorted(latent_caps)} need a latent section")
    if manifest.reference is not None and "encode" not in caps:
        raise ValueError("a latent reference (bias reports) needs the 'encode' capability")
