"""A real Triton Inference Server for a Triton repository that `latentwatch triton-repo` wrote.

nvidia-pytriton bundles tritonserver with its Python backend only (no onnxruntime backend), so
each model's graph runs in ONNX Runtime inside a pytriton model, bound under the model's name
and newest version with the config's tensors, max_batch_size, dynamic batching delay and
instance count. Clients see what Triton's onnxruntime backend would serve for the same
config.pbtxt. Used by the contract test (tests/service/test_triton_runtime.py) and the protocol
benchmark.

Runs in its own environment (pytriton needs numpy < 2 and the system libpython; `make
.venv-triton`), so it imports nothing from latentwatch:

    .venv-triton/bin/python deploy/triton/serve_onnx.py --triton-repo T --grpc-port 8001
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from google.protobuf import text_format
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from tritonclient.grpc import model_config_pb2

log = logging.getLogger("serve_onnx")

NUMPY_OF = {
    "TYPE_FP32": np.float32, "TYPE_FP64": np.float64, "TYPE_FP16": np.float16,
    "TYPE_INT64": np.int64, "TYPE_INT32": np.int32, "TYPE_INT8": np.int8,
    "TYPE_UINT8": np.uint8, "TYPE_BOOL": np.bool_,
}


def _tensor(io: model_config_pb2.ModelInput | model_config_pb2.ModelOutput) -> Tensor:
    dtype = NUMPY_OF[model_config_pb2.DataType.Name(io.data_type)]
    return Tensor(name=io.name, dtype=dtype, shape=tuple(io.dims))


def _model_shape(io: model_config_pb2.ModelInput | model_config_pb2.ModelOutput) -> list[int]:
    """The graph's shape without the batch axis: the config's reshape when it has one."""
    return list(io.reshape.shape) if io.HasField("reshape") else list(io.dims)


def _infer_fn(session: ort.InferenceSession, config: model_config_pb2.ModelConfig):
    """One instance: the batch Triton formed, reshaped as the config says, through ONNX Runtime."""
    inputs = {i.name: _model_shape(i) for i in config.input}
    outputs = {o.name: list(o.dims) for o in config.output}

    @batch
    def infer(**feeds: np.ndarray) -> dict[str, np.ndarray]:
        n = next(iter(feeds.values())).shape[0]
        model_feeds = {k: v.reshape([n, *inputs[k]]) for k, v in feeds.items()}
        results = session.run(list(outputs), model_feeds)
        return {k: r.reshape([n, *outputs[k]]) for k, r in zip(outputs, results, strict=True)}

    return infer


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def bind_repository(triton: Triton, triton_repo: Path, threads: int) -> list[str]:
    """Binds each model of the Triton repository at its newest version (pytriton cannot load
    two versions of one model name: their instances collide); returns "name:version" of each."""
    bound = []
    for config_path in sorted(triton_repo.glob("*/config.pbtxt")):
        config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
        count = max(1, sum(g.count for g in config.instance_group) or 1)
        delay_us = config.dynamic_batching.max_queue_delay_microseconds
        versions = sorted((p for p in config_path.parent.iterdir() if p.name.isdigit()),
                          key=lambda p: int(p.name))
        for version_dir in versions[-1:]:  # pytriton binds one version per model name
            graph = version_dir / config.default_model_filename
            triton.bind(
                model_name=config.name,
                model_version=int(version_dir.name),
                infer_func=[_infer_fn(_session(graph, threads), config) for _ in range(count)],
                inputs=[_tensor(i) for i in config.input],
                outputs=[_tensor(o) for o in config.output],
                config=ModelConfig(
                    max_batch_size=config.max_batch_size,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=delay_us),
                ),
                strict=True,
            )
            bound.append(f"{config.name}:{version_dir.name}")
    return bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triton-repo", required=True, type=Path,
                        help="the repository `latentwatch triton-repo` wrote")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per instance")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = TritonConfig(
        grpc_port=args.grpc_port, http_port=args.http_port, metrics_port=args.metrics_port,
        grpc_address="127.0.0.1", http_address="127.0.0.1", allow_metrics=False,
    )
    with Triton(config=config) as triton:
        bound = bind_repository(triton, args.triton_repo, args.threads)
        log.info("serving %s on gRPC port %d", ", ".join(bound), args.grpc_port)
        triton.serve()


if __name__ == "__main__":
    main()
