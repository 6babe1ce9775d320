"""What the server tests share: stubs, the VAE under test and rows in its input range."""

from __future__ import annotations

import numpy as np
from server_harness import RepoUnderTest, ServerThread

from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.manifest import Manifest

SERVICE = "latentwatch.v1.Latentwatch"


def stub(server: ServerThread) -> pb_grpc.LatentwatchStub:
    return pb_grpc.LatentwatchStub(server.channel)


def vae(repo: RepoUnderTest) -> str:
    name = repo.model_of_kind("vae", "beta-vae")
    assert name is not None, f"{repo.path} holds no VAE"
    return name


def rows_for(manifest: Manifest, n: int, seed: int = 0) -> np.ndarray:
    """Rows in the model's raw input range (images in [0, 16]-ish, tabular standard normal)."""
    rng = np.random.default_rng(seed)
    shift = np.asarray(manifest.input.preprocessing.shift, dtype=np.float32)
    scale = np.asarray(manifest.input.preprocessing.scale, dtype=np.float32)
    x = shift + rng.normal(size=(n, manifest.n_features)).astype(np.float32) / scale
    if manifest.input.preprocessing.clip is not None:
        low, high = manifest.input.preprocessing.clip
        x = np.clip(x, low / scale + shift, high / scale + shift)
    return x.astype(np.float32)
