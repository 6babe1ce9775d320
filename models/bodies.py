"""Encoder and decoder networks: an MLP for rows, a small conv net for single-channel images.

Encoders map (B, F) -> (B, out_dim). Decoders map (..., Z) with any leading dims -> (..., H*F)
for H outputs per feature (H = 2 for the heteroscedastic decoder: all F means, then all F raw
log-variances), flattening the leading dims for the layers and restoring them afterwards, with
shapes taken from the tensor (not Python ints) so the batch axis stays dynamic in ONNX exports.
"""

from __future__ import annotations

from torch import Tensor, nn

from latentwatch.models.config import ModelConfig


def _activation() -> nn.Module:
    # Smooth, so scores vary smoothly with the input; exports as x * sigmoid(x).
    return nn.SiLU()


class MLPEncoder(nn.Module):
    def __init__(self, n_features: int, hidden: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), _activation()]
            width = h
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, F) -> (B, out_dim)


class MLPDecoder(nn.Module):
    def __init__(self, latent_dim: int, hidden: tuple[int, ...], n_outputs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for h in reversed(hidden):
            layers += [nn.Linear(width, h), _activation()]
            width = h
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)  # Linear takes any leading dims: (..., Z) -> (..., H*F)


def _halved(side: int, n_layers: int) -> int:
    """Side length after n stride-2 convs (kernel 3, padding 1): ceil(side / 2) each."""
    for _ in range(n_layers):
        side = (side + 1) // 2
    return side


class ConvEncoder(nn.Module):
    """Stride-2 convs, e.g. 8x8 -> 4x4 -> 2x2 or 28x28 -> 14x14 -> 7x7, then a linear head."""

    def __init__(
        self, image_shape: tuple[int, int, int], channels: tuple[int, ...], out_dim: int
    ) -> None:
        super().__init__()
        self.image_shape = image_shape
        layers: list[nn.Module] = []
        in_channels = image_shape[0]
        for c in channels:
            layers += [nn.Conv2d(in_channels, c, kernel_size=3, stride=2, padding=1), _activation()]
            in_channels = c
        self.convs = nn.Sequential(*layers)
        h, w = (_halved(s, len(channels)) for s in image_shape[1:])
        self.head = nn.Linear(in_channels * h * w, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        c, h, w = self.image_shape
        maps = self.convs(x.reshape(-1, c, h, w))  # (B, H*W) -> (B, 1, H, W) -> (B, C', h, w)
        return self.head(maps.flatten(1))  # (B, C'*h*w) -> (B, out_dim)


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder with transposed convs that double each side, then a crop to H x W.

    With n_heads > 1 the last layer has n_heads times the image channels, head-major, so that
    flattening the maps gives all of head 0 (e.g. the means), then all of head 1 (log-variances).
    """

    def __init__(
        self,
        latent_dim: int,
        channels: tuple[int, ...],
        image_shape: tuple[int, int, int],
        n_heads: int = 1,
    ) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.n_heads = n_heads
        self.start_shape = (
            channels[-1],
            *(_halved(s, len(channels)) for s in image_shape[1:]),
        )
        c0, h0, w0 = self.start_shape
        self.head = nn.Sequential(nn.Linear(latent_dim, c0 * h0 * w0), _activation())
        layers: list[nn.Module] = []
        outs = [*reversed(channels[:-1]), image_shape[0] * n_heads]
        in_channels = c0
        for i, c in enumerate(outs):
            layers.append(nn.ConvTranspose2d(in_channels, c, kernel_size=4, stride=2, padding=1))
            if i < len(outs) - 1:
                layers.append(_activation())
            in_channels = c
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        c, h, w = self.image_shape
        flat = z.reshape(-1, z.shape[-1])  # (..., Z) -> (B', Z)
        maps = self.head(flat).reshape(-1, *self.start_shape)  # (B', c0, h0, w0)
        # (B', heads*C, >=H, >=W) -> (B', heads*C, H, W) -> (..., heads*F)
        images = self.deconvs(maps)[:, :, :h, :w]
        return images.reshape(*z.shape[:-1], self.n_heads * c * h * w)


def build_encoder(config: ModelConfig, out_dim: int) -> nn.Module:
    if config.body == "conv":
        assert config.image_shape is not None  # checked by ModelConfig
        return ConvEncoder(config.image_shape, config.hidden, out_dim)
    return MLPEncoder(config.n_features, config.hidden, out_dim)


def build_decoder(config: ModelConfig) -> nn.Module:
    heads = config.decoder_outputs_per_feature
    if config.body == "conv":
        assert config.image_shape is not None
        return ConvDecoder(config.latent_dim, config.hidden, config.image_shape, n_heads=heads)
    return MLPDecoder(config.latent_dim, config.hidden, heads * config.n_features)
