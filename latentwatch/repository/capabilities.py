"""What a manifest's capabilities require of its graphs and sections (format 2).

A version names what it can do; each capability needs the graphs and sections that do it, and
a section no capability uses is refused too, so that a manifest cannot claim more (or carry
more) than it serves. The family (latentwatch.families) bounds the capabilities of its kind.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from latentwatch.families import family

if TYPE_CHECKING:  # manifest.py imports this module
    from latentwatch.repository.manifest import GenerationSpec, Manifest, TensorSpec

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
    _check_generation(manifest)


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


def needs_generation(manifest: Manifest) -> bool:
    """Whether the version's capabilities need a generation section: "translate", and
    "generate" of a family with a generator graph (a VAE generates from its decoder and latent
    section instead)."""
    caps = set(manifest.capabilities)
    generator = "generator" in family(manifest.model_kind).graphs
    return "translate" in caps or ("generate" in caps and generator)


def _tensors(specs: list[TensorSpec]) -> dict[str, TensorSpec]:
    return {t.name: t for t in specs}


def _check_generation(manifest: Manifest) -> None:
    """The generation section goes with a generator or translator graph and describes it."""
    spec = manifest.generation
    if not needs_generation(manifest):
        if spec is not None:
            raise ValueError("a generation section needs the 'translate' capability or "
                             "'generate' with a 'generator' graph")
        return
    if spec is None:
        raise ValueError(f"capabilities {sorted(manifest.capabilities)} need a generation section")
    if math.prod(spec.output_shape) != manifest.n_features:
        raise ValueError(f"generation.output_shape {spec.output_shape} holds "
                         f"{math.prod(spec.output_shape)} values, not the {manifest.n_features} "
                         "features of the input")
    if "generator" in manifest.graphs:
        _check_generator(manifest, spec)
    if "translator" in manifest.graphs:
        _check_translator(manifest, spec)


def _expect(graph: str, tensor: TensorSpec | None, name: str, datatype: str,
            shape: list[int]) -> None:
    if tensor is None:
        raise ValueError(f"the {graph!r} graph needs a {name!r} tensor")
    if (tensor.datatype, tensor.shape) != (datatype, shape):
        raise ValueError(f"{graph}.{name} is {tensor.datatype} {tensor.shape}; the generation "
                         f"section needs {datatype} {shape}")


def _check_generator(manifest: Manifest, spec: GenerationSpec) -> None:
    graph = manifest.graphs["generator"]
    inputs, outputs = _tensors(graph.inputs), _tensors(graph.outputs)
    if spec.latent_dim < 1:
        raise ValueError("a generator needs generation.latent_dim >= 1")
    _expect("generator", inputs.get("z"), "z", "FP32", [-1, spec.latent_dim])
    expected = {"z", "label"} if spec.n_classes is not None else {"z"}
    if set(inputs) != expected:
        raise ValueError(f"generator inputs {sorted(inputs)}: with n_classes "
                         f"{spec.n_classes} they are {sorted(expected)}")
    if spec.n_classes is not None:
        _expect("generator", inputs.get("label"), "label", "INT64", [-1])
    _expect("generator", outputs.get("sample"), "sample", "FP32", [-1, *spec.output_shape])


def _check_translator(manifest: Manifest, spec: GenerationSpec) -> None:
    graph = manifest.graphs["translator"]
    if spec.latent_dim != 0 or spec.n_classes is not None:
        raise ValueError("a translator takes no z or label: generation.latent_dim is 0 and "
                         "n_classes null")
    if manifest.input.image_shape is not None and manifest.input.image_shape != spec.output_shape:
        raise ValueError(f"input.image_shape {manifest.input.image_shape} differs from "
                         f"generation.output_shape {spec.output_shape}")
    shape = [-1, *spec.output_shape]
    _expect("translator", _tensors(graph.inputs).get("image"), "image", "FP32", shape)
    _expect("translator", _tensors(graph.outputs).get("translated"), "translated", "FP32", shape)
