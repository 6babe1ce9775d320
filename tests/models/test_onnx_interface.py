"""The model interface export builds on runs through the legacy ONNX exporter and ONNX Runtime.

Export composes encode/decode/log_px into its own graphs; this protects the pieces: dynamic
batch, decode on (K, B, Z), x (B, F) broadcast against (K, B, F), for both bodies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from latentwatch.models import ModelConfig, build_model
from latentwatch.models.base import LatentModel

onnx = pytest.importorskip("onnx", reason="onnx is part of the train extras")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to run the graphs")

K = 4


class _Pieces(nn.Module):
    """Everything export calls, with fixed noise as export stores it."""

    def __init__(self, model: LatentModel) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("eps", torch.randn(K, 1, model.config.latent_dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        mu, logvar = self.model.encode(x)  # (B, F) -> (B, Z), (B, Z)
        if logvar is None:  # autoencoder: one deterministic code per row
            z = mu.unsqueeze(0)  # (1, B, Z)
            logvar = torch.zeros_like(mu)
        else:
            z = mu + torch.exp(0.5 * logvar) * self.eps  # (K, B, Z)
        loc = self.model.decode(z)  # (K, B, F)
        log_px = self.model.log_px(x, loc)  # (K, B)
        return mu, logvar, log_px, self.model.reconstruct(loc)


def _export(module: nn.Module, n_features: int, path: Path) -> None:
    torch.onnx.export(
        module,
        (torch.rand(2, n_features),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["latent_mu", "latent_logvar", "log_px", "recon"],
        dynamic_axes={
            "input": {0: "batch"},
            "latent_mu": {0: "batch"},
            "latent_logvar": {0: "batch"},
            "log_px": {1: "batch"},
            "recon": {1: "batch"},
        },
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    ("kind", "body", "decoder"),
    [
        ("vae", "conv", "bernoulli"),
        ("vae", "mlp", "gaussian"),
        ("vae", "mlp", "bernoulli"),
        ("ae", "conv", "gaussian"),
        ("vae", "mlp", "gaussian-hetero"),
        ("vae", "conv", "gaussian-hetero"),
    ],
)
def test_encode_decode_log_px_export_and_run(
    tmp_path: Path, kind: str, body: str, decoder: str
) -> None:
    torch.manual_seed(0)
    config = ModelConfig(
        kind=kind,  # type: ignore[arg-type]
        n_features=64,
        body=body,  # type: ignore[arg-type]
        image_shape=(1, 8, 8),
        hidden=(8, 16) if body == "conv" else (32, 16),
        latent_dim=3,
        decoder=decoder,  # type: ignore[arg-type]
    )
    pieces = _Pieces(build_model(config)).eval()
    path = tmp_path / "pieces.onnx"
    with torch.no_grad():
        _export(pieces, 64, path)
    model_proto = onnx.load(str(path))
    onnx.checker.check_model(model_proto)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = np.random.default_rng(batch).uniform(size=(batch, 64)).astype(np.float32)
        got = session.run(None, {"input": x})
        with torch.no_grad():
            expected = [t.numpy() for t in pieces(torch.from_numpy(x))]
        k = K if kind != "ae" else 1
        assert [g.shape for g in got] == [(batch, 3), (batch, 3), (k, batch), (k, batch, 64)]
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)
