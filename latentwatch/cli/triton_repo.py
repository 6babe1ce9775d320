"""`latentwatch triton-repo`: a Triton model repository with one model per graph, beside the
latentwatch repository (export/triton.py), for `latentwatch serve --backend triton`.

Torch-free: it reads manifests, checks sha256 and links files.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "triton-repo",
        help="write a Triton model repository (one model per graph: <model>.<graph>) from a "
             "latentwatch repository",
    )
    p.add_argument("--repo", required=True, type=Path, help="latentwatch model repository")
    p.add_argument("--out", required=True, type=Path,
                   help="Triton model repository to write (its <model>.<graph>/ are replaced)")
    p.add_argument("--max-batch-size", type=int, default=1024,
                   help="Triton's max_batch_size per model")
    p.add_argument("--max-queue-delay-us", type=int, default=500,
                   help="dynamic batching: longest a request waits for a batch, microseconds")
    p.add_argument("--instances", type=int, default=1,
                   help="model instances per device (instance_group count)")
    p.add_argument("--kind", choices=("auto", "cpu", "gpu"), default="auto",
                   help="instance_group kind: auto (GPUs when Triton has them), cpu or gpu")
    p.add_argument("--tensorrt", action="store_true",
                   help="ONNX Runtime's TensorRT accelerator on GPU instances (default: off)")
    p.add_argument("--tensorrt-precision", choices=("FP16", "FP32"), default="FP16",
                   help="TensorRT precision_mode")
    p.add_argument("--version-policy", default="all",
                   help="all, latest:N, or specific (exactly the versions written)")


def run(args: argparse.Namespace) -> None:
    from latentwatch.export.triton import InstanceKind, TritonOptions, write_triton_repository

    kinds: dict[str, InstanceKind] = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
    options = TritonOptions(
        max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us,
        instance_count=args.instances, instance_kind=kinds[args.kind],
        tensorrt=args.tensorrt, tensorrt_precision=args.tensorrt_precision,
        version_policy=args.version_policy,
    )
    written = write_triton_repository(args.repo, args.out, options)
    for model in written:
        skipped = f" (left out: {', '.join(model.skipped)})" if model.skipped else ""
        print(f"{model.name}: versions {', '.join(model.versions)}{skipped}")
    print(f"wrote {len(written)} Triton models to {args.out}")
