"""Generator and translator versions for service tests, built with onnx.helper (no training).

The graphs compute simple, checkable functions (numpy twins below):
    gan:      sample = reshape(z @ W + b)                       (batch, *output_shape)
    cgan:     sample = reshape(z @ W + b + E[label])
    pix2pix:  translated = HIGH - image                         (batch, C, H, W)
W is (Z, F) and E (n_classes, F), fixed by a seed; W's last row is 0, so the last latent
dimension changes nothing (a traversal names it inactive). The server clips samples to
output_range.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from latentwatch.repository.layout import MANIFEST_FILE, graph_file
from latentwatch.repository.manifest import (
    GenerationSpec,
    GraphSpec,
    InputSpec,
    Manifest,
    OnnxInfo,
    Parity,
    Preprocessing,
    Provenance,
    TensorSpec,
    sha256_file,
)

OPSET = 17
IR_VERSION = 9
HIGH = 16.0  # data units of the synthetic images: [0, 16] like sklearn's digits
OUTPUT_RANGE = [0.0, HIGH]


def _weights(latent_dim: int, n_features: int, n_classes: int) -> tuple[NDArray, ...]:
    rng = np.random.default_rng(11)
    w = rng.normal(size=(latent_dim, n_features)).astype(np.float32)
    w[-1] = 0.0  # a dead dimension
    b = np.full(n_features, HIGH / 2, dtype=np.float32)
    e = (rng.normal(size=(max(n_classes, 1), n_features)) * 4).astype(np.float32)
    return w, b, e


def reference_generate(
    z: NDArray, labels: NDArray | None, output_shape: list[int], n_classes: int = 0
) -> NDArray[np.float64]:
    """What the synthetic generator computes, clipped to OUTPUT_RANGE as the server does."""
    n_features = math.prod(output_shape)
    w, b, e = _weights(z.shape[1], n_features, n_classes)
    out = np.asarray(z, np.float64) @ w.astype(np.float64) + b
    if labels is not None:
        out = out + e[np.asarray(labels)]
    return np.clip(out, *OUTPUT_RANGE).reshape(-1, *output_shape)


def build_generator(latent_dim: int, output_shape: list[int], n_classes: int | None
                    ) -> onnx.ModelProto:
    n_features = math.prod(output_shape)
    w, b, e = _weights(latent_dim, n_features, n_classes or 0)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
             numpy_helper.from_array(np.array([-1, *output_shape], dtype=np.int64), "shape")]
    nodes = [helper.make_node("MatMul", ["z", "w"], ["zw"]),
             helper.make_node("Add", ["zw", "b"], ["flat0"])]
    inputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", latent_dim])]
    if n_classes is not None:
        inits.append(numpy_helper.from_array(e, "e"))
        inputs.append(helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]))
        nodes += [helper.make_node("Gather", ["e", "label"], ["emb"], axis=0),
                  helper.make_node("Add", ["flat0", "emb"], ["flat"])]
    else:
        nodes.append(helper.make_node("Identity", ["flat0"], ["flat"]))
    nodes.append(helper.make_node("Reshape", ["flat", "shape"], ["sample"]))
    graph = helper.make_graph(
        nodes, "synthetic_generator", inputs,
        [helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", *output_shape])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def build_translator(image_shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Sub", ["high", "image"], ["translated"])],
        "synthetic_translator",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", *image_shape])],
        [helper.make_tensor_value_info("translated", TensorProto.FLOAT, ["batch", *image_shape])],
        initializer=[numpy_helper.from_array(np.array(HIGH, dtype=np.float32), "high")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def build_generative_version(
    repo: Path,
    name: str,
    version: str = "1",
    *,
    kind: str = "gan",
    output_shape: tuple[int, ...] = (1, 8, 8),
    latent_dim: int = 4,
    n_classes: int | None = None,
    class_names: list[str] | None = None,
    generator: onnx.ModelProto | None = None,
) -> Path:
    """Writes <repo>/<name>/<version>/ for a gan or cgan (generator graph) or a pix2pix
    (translator graph) version; `generator` replaces the synthetic graph (for broken ones)."""
    version_dir = repo / name / version
    version_dir.mkdir(parents=True)
    shape = list(output_shape)
    n_features = math.prod(shape)
    is_image = len(shape) == 3
    if kind == "pix2pix":
        graph_name, latent_dim, n_classes = "translator", 0, None
        model = build_translator(shape)
        spec = GraphSpec(
            file=graph_file(graph_name),
            inputs=[TensorSpec(name="image", shape=[-1, *shape])],
            outputs=[TensorSpec(name="translated", shape=[-1, *shape])],
        )
        capabilities = ["translate"]
    else:
        graph_name = "generator"
        model = generator or build_generator(latent_dim, shape, n_classes)
        inputs = [TensorSpec(name="z", shape=[-1, latent_dim])]
        if n_classes is not None:
            inputs.append(TensorSpec(name="label", datatype="INT64", shape=[-1]))
        spec = GraphSpec(file=graph_file(graph_name), inputs=inputs,
                         outputs=[TensorSpec(name="sample", shape=[-1, *shape])])
        capabilities = ["generate"]
    onnx.save(model, version_dir / graph_file(graph_name))
    manifest = Manifest(
        name=name,
        version=version,
        model_kind=kind,
        capabilities=capabilities,
        input=InputSpec(
            shape=[n_features],
            image_shape=shape if is_image else None,
            preprocessing=Preprocessing(kind="scale", shift=[0.0], scale=[1 / HIGH],
                                        clip=(0.0, 1.0)),
        ),
        graphs={graph_name: spec},
        generation=GenerationSpec(
            latent_dim=latent_dim, n_classes=n_classes, class_names=class_names,
            output_shape=shape, output_range=OUTPUT_RANGE,
            dropout_at_inference=False if kind == "pix2pix" else None,
            stabilisation="synthetic",
        ),
        parity=Parity(batch_sizes=[1, 7], rtol=1e-5, atol=1e-6, max_abs_error={}),
        onnx=OnnxInfo(opset=OPSET, ir_version=IR_VERSION, producer="tests"),
        provenance=Provenance(
            data="synthetic", n_train=0, n_validation=0, seed=0, epochs=0, final_losses={},
            trained_at="2026-01-01T00:00:00Z", latentwatch_version="0.1.0",
            torch_version="none",
        ),
        sha256={graph_file(graph_name): sha256_file(version_dir / graph_file(graph_name))},
        created_at="2026-01-01T00:00:00Z",
    )
    (version_dir / MANIFEST_FILE).write_text(manifest.to_json())
    return version_dir


def build_generative_repo(repo: Path) -> Path:
    """gan "img-gan" (1x8x8), cgan "img-cgan" (3 classes), gan "tab-gan" (5 features),
    pix2pix "img-p2p" (1x8x8)."""
    build_generative_version(repo, "img-gan", kind="gan")
    build_generative_version(repo, "img-cgan", kind="cgan", n_classes=3,
                             class_names=["zero", "one", "two"])
    build_generative_version(repo, "tab-gan", kind="gan", output_shape=(5,), latent_dim=2)
    build_generative_version(repo, "img-p2p", kind="pix2pix")
    return repo
