"""Small model repositories for service tests, built with onnx.helper (no training).

The graphs compute simple, checkable functions of the raw rows x (batch, F):
    score = neg_elbo = sum(x**2),  iwae_nll = sum(x**2) / 2,  recon_error = sum(|x|),
    kl = max(x),  latent_mu = x @ W,  latent_logvar = x @ W / 10
A plain autoencoder ("ae") has score = recon_error = sum(|x|) and latent_mu only.
With `with_decoder=True` a decoder graph maps latent z (batch, Z) to reconstruction = z @ W.T,
and with `with_reference=True` reference.npz summarises the latents of REFERENCE_ROWS standard
normal rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from latentwatch.bias.drift import LatentReference
from latentwatch.families import family
from latentwatch.repository.layout import (
    CALIBRATION_FILE,
    DECODER_FILE,
    ENCODER_FILE,
    MANIFEST_FILE,
    REFERENCE_FILE,
    SCORER_FILE,
)
from latentwatch.repository.manifest import (
    Calibration,
    GraphSpec,
    InputSpec,
    LatentSpec,
    Manifest,
    OnnxInfo,
    Parity,
    Preprocessing,
    Provenance,
    ReferenceSpec,
    ScoringSpec,
    TensorSpec,
    sha256_file,
)

OPSET = 17
IR_VERSION = 9  # onnxruntime 1.31 reads IR <= 13
VAE_KINDS = ["neg_elbo", "iwae_nll", "recon_error", "kl"]
AE_KINDS = ["recon_error"]
REFERENCE_ROWS = 500


def reference_outputs(x: NDArray, kind: str, latent_dim: int) -> dict[str, NDArray]:
    """What the synthetic graphs compute, in numpy (float64)."""
    x = np.asarray(x, dtype=np.float64)
    w = _weights(x.shape[1], latent_dim).astype(np.float64)
    recon = np.abs(x).sum(axis=1)
    if not family(kind).variational:
        return {"score": recon, "recon_error": recon, "latent_mu": x @ w}
    sq = (x**2).sum(axis=1)
    return {
        "score": sq,
        "neg_elbo": sq,
        "iwae_nll": sq / 2,
        "recon_error": recon,
        "kl": x.max(axis=1),
        "latent_mu": x @ w,
        "latent_logvar": x @ w / 10,
    }


def _weights(n_features: int, latent_dim: int) -> NDArray[np.float32]:
    return np.random.default_rng(7).normal(size=(n_features, latent_dim)).astype(np.float32)


def reference_decode(z: NDArray, n_features: int) -> NDArray[np.float64]:
    """What the synthetic decoder graph computes, in numpy (float64)."""
    z = np.asarray(z, dtype=np.float64)
    return z @ _weights(n_features, z.shape[1]).astype(np.float64).T


def reference_rows(n_features: int, seed: int) -> NDArray[np.float32]:
    """The rows whose latents reference.npz summarises."""
    rows = np.random.default_rng(seed + 1000).normal(size=(REFERENCE_ROWS, n_features))
    return rows.astype(np.float32)


def build_decoder(n_features: int, latent_dim: int) -> onnx.ModelProto:
    w_t = np.ascontiguousarray(_weights(n_features, latent_dim).T)  # (Z, F)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["latent", "w_t"], ["reconstruction"])],
        "synthetic_decoder",
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["batch", latent_dim])],
        [helper.make_tensor_value_info(
            "reconstruction", TensorProto.FLOAT, ["batch", n_features]
        )],
        initializer=[numpy_helper.from_array(w_t, "w_t")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def build_graph(kind: str, n_features: int, latent_dim: int, outputs: list[str]) -> onnx.ModelProto:
    w = _weights(n_features, latent_dim)
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array((w / 10).astype(np.float32), "w_logvar"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
    ]
    sq_or_abs = "sq" if family(kind).variational else "abs_sum"
    nodes = [
        helper.make_node("Mul", ["input", "input"], ["x2"]),
        helper.make_node("ReduceSum", ["x2", "axis1"], ["sq"], keepdims=0),
        helper.make_node("Abs", ["input"], ["absx"]),
        helper.make_node("ReduceSum", ["absx", "axis1"], ["abs_sum"], keepdims=0),
        helper.make_node("Identity", [sq_or_abs], ["score"]),
        helper.make_node("Identity", ["sq"], ["neg_elbo"]),
        helper.make_node("Mul", ["sq", "half"], ["iwae_nll"]),
        helper.make_node("Identity", ["abs_sum"], ["recon_error"]),
        helper.make_node("ReduceMax", ["input"], ["kl"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["input", "w"], ["latent_mu"]),
        helper.make_node("MatMul", ["input", "w_logvar"], ["latent_logvar"]),
    ]
    shapes: dict[str, list[str | int]] = {
        "latent_mu": ["batch", latent_dim], "latent_logvar": ["batch", latent_dim]
    }
    graph = helper.make_graph(
        nodes,
        "synthetic",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_features])],
        [
            helper.make_tensor_value_info(o, TensorProto.FLOAT, shapes.get(o, ["batch"]))
            for o in outputs
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    # Drop nodes whose outputs nobody needs, so each graph is a valid, minimal model.
    return _prune(model, outputs)


def _prune(model: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    needed = set(outputs)
    kept = []
    for node in reversed(list(model.graph.node)):
        if set(node.output) & needed:
            kept.append(node)
            needed |= set(node.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    unused = [i for i in model.graph.initializer if i.name not in needed]
    for init in unused:
        model.graph.initializer.remove(init)
    return model


def build_version(
    repo: Path,
    name: str,
    version: str = "1",
    *,
    kind: str = "vae",
    n_features: int = 64,
    image_shape: list[int] | None = None,
    latent_dim: int = 3,
    n_calibration: int = 99,
    default_alpha: float = 0.05,
    seed: int = 0,
    with_decoder: bool = False,
    with_reference: bool = False,
) -> Path:
    """Writes <repo>/<name>/<version>/ with scorer, encoder, calibration and manifest (and a
    decoder graph and latent reference when asked)."""
    version_dir = repo / name / version
    version_dir.mkdir(parents=True)
    kinds = VAE_KINDS if family(kind).variational else AE_KINDS
    latent = list(family(kind).latent_outputs)
    scorer_outputs = ["score", *kinds, *latent]
    scorer = build_graph(kind, n_features, latent_dim, scorer_outputs)
    onnx.save(scorer, version_dir / SCORER_FILE)
    onnx.save(build_graph(kind, n_features, latent_dim, latent), version_dir / ENCODER_FILE)

    rows = np.random.default_rng(seed).normal(size=(n_calibration, n_features))
    rows = rows.astype(np.float32)  # the graphs see FP32 rows
    reference = reference_outputs(rows, kind, latent_dim)
    calibration = np.stack([reference[k] for k in kinds], axis=1)  # (n, kinds) float64
    np.save(version_dir / CALIBRATION_FILE, calibration)

    def spec(names: list[str]) -> list[TensorSpec]:
        return [TensorSpec(name=n, shape=[-1, latent_dim] if n in latent else [-1]) for n in names]

    files = [SCORER_FILE, ENCODER_FILE, CALIBRATION_FILE]
    graphs = {
        "scorer": GraphSpec(
            file=SCORER_FILE,
            inputs=[TensorSpec(name="input", shape=[-1, n_features])],
            outputs=spec(scorer_outputs),
        ),
        "encoder": GraphSpec(
            file=ENCODER_FILE,
            inputs=[TensorSpec(name="input", shape=[-1, n_features])],
            outputs=spec(latent),
        ),
    }
    if with_decoder:
        onnx.save(build_decoder(n_features, latent_dim), version_dir / DECODER_FILE)
        files.append(DECODER_FILE)
        graphs["decoder"] = GraphSpec(
            file=DECODER_FILE,
            inputs=[TensorSpec(name="latent", shape=[-1, latent_dim])],
            outputs=[TensorSpec(name="reconstruction", shape=[-1, n_features])],
        )
    reference_spec = None
    if with_reference:
        train = reference_outputs(reference_rows(n_features, seed), kind, latent_dim)
        LatentReference.from_latents(train["latent_mu"], train.get("latent_logvar")).save(
            version_dir / REFERENCE_FILE
        )
        files.append(REFERENCE_FILE)
        reference_spec = ReferenceSpec(
            n_rows=REFERENCE_ROWS, fit_split=f"synthetic standard normal rows, seed {seed + 1000}"
        )
    capabilities = ["score", "encode", *(["decode"] if with_decoder else [])]
    manifest = Manifest(
        name=name,
        version=version,
        model_kind=kind,
        capabilities=capabilities,
        latent=LatentSpec(latent_dim=latent_dim, beta=1.0, decoder="gaussian",
                          n_importance_samples=4),
        input=InputSpec(
            shape=[n_features],
            image_shape=image_shape,
            preprocessing=Preprocessing(
                kind="standardize", shift=[0.0] * n_features, scale=[1.0] * n_features
            ),
        ),
        graphs=graphs,
        reference=reference_spec,
        scoring=ScoringSpec(
            score_kinds=kinds,
            default_score_kind=kinds[0],
            calibration=Calibration(
                size=n_calibration,
                score_kinds=kinds,
                default_alpha=default_alpha,
                split=f"synthetic standard normal rows, seed {seed}",
            ),
        ),
        parity=Parity(batch_sizes=[1, 7], rtol=1e-5, atol=1e-6, max_abs_error={"score": 0.0}),
        onnx=OnnxInfo(opset=OPSET, ir_version=IR_VERSION, producer="tests"),
        provenance=Provenance(
            data="synthetic",
            n_train=0,
            n_validation=0,
            seed=seed,
            epochs=0,
            final_losses={},
            trained_at="2026-01-01T00:00:00Z",
            latentwatch_version="0.1.0",
            torch_version="none",
        ),
        sha256={f: sha256_file(version_dir / f) for f in files},
        created_at="2026-01-01T00:00:00Z",
    )
    (version_dir / MANIFEST_FILE).write_text(manifest.to_json())
    return version_dir


def build_repo(repo: Path) -> Path:
    """Two models: an image VAE "img-vae" (64 = 1x8x8 features) and a tabular AE "tab-ae"."""
    build_version(repo, "img-vae", "1", kind="vae", n_features=64, image_shape=[1, 8, 8])
    build_version(repo, "tab-ae", "1", kind="ae", n_features=5, latent_dim=2, seed=1)
    return repo
