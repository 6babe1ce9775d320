"""The torch modules that become ONNX graphs: fused scorer, encoder and decoder.

Every graph takes a dynamic `batch` axis and computes each row on its own (no batch statistics,
no random draws at run time), so a row's outputs are the same alone or inside any batch.

The scorer takes RAW rows: preprocessing (shift, scale, clip) is baked in as buffers, so a
client never has to know how the model was trained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import torch
from torch import Tensor, nn

from latentwatch.families import family
from latentwatch.models.preprocessing import Preprocess
from latentwatch.repository.layout import graph_file
from latentwatch.scoring.preprocessing import Preprocessing


class ScorableModel(Protocol):
    """What export needs from a trained model (latentwatch.models); x is preprocessed."""

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]: ...  # (B, F) -> (B, Z), (B, Z)

    # (..., Z) -> (..., F) logits or mean, or (..., 2F) [mean, raw log-variance] (hetero)
    def decode(self, z: Tensor) -> Tensor: ...

    def log_px(self, x: Tensor, loc: Tensor) -> Tensor: ...  # (B, F), (K, B, F|2F) -> (K, B)

    def reconstruct(self, loc: Tensor) -> Tensor: ...  # (..., F|2F) -> (..., F) model-space mean


@dataclass(frozen=True)
class GraphDef:
    """One graph to export: the module, its tensor names and their shapes without the batch."""

    name: str  # "scorer", "encoder", "decoder"
    module: nn.Module
    input_name: str
    input_width: int
    # Output name -> shape without the batch axis ([] for per-row scalars).
    outputs: dict[str, list[int]]

    @property
    def file(self) -> str:
        return graph_file(self.name)


def fixed_noise(n_samples: int, latent_dim: int, seed: int) -> Tensor:
    """K standard-normal draws (K, 1, Z), fixed at export so that scores are deterministic.

    With K >= 2 the draws are moment-matched per latent dimension (mean 0, mean square 1 over
    the K draws). That makes the Monte Carlo KL over these draws equal the closed-form KL
    exactly, so the ELBO (closed-form KL) and the IWAE estimate share one estimator and
    iwae_nll <= neg_elbo holds row by row (Jensen), and it lowers the variance of both.
    """
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn(n_samples, 1, latent_dim, generator=generator, dtype=torch.float64)
    if n_samples >= 2:
        eps = eps - eps.mean(dim=0, keepdim=True)
        eps = eps / eps.pow(2).mean(dim=0, keepdim=True).sqrt()
    return eps.to(torch.float32)


class _Wrapped(nn.Module):
    """Holds the trained model as a submodule (so its weights trace) with a typed accessor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def net(self) -> ScorableModel:
        return cast(ScorableModel, self.model)

    def decode_flat(self, z: Tensor) -> Tensor:  # (K, B, Z) -> (K, B, F), or 2F for hetero
        # Decoders only ever see 2-D batches here: conv decoders need not handle extra axes.
        k, z_dim = z.shape[0], z.shape[-1]
        loc = self.net.decode(z.reshape(-1, z_dim))  # (K*B, Z) -> (K*B, F|2F)
        return loc.reshape(k, -1, loc.shape[-1])

    def recon_error(self, x: Tensor, mu: Tensor) -> Tensor:  # (B, F), (B, Z) -> (B,)
        # The decoder's mean at z = mu (a heteroscedastic decoder's variance half is not used).
        recon = self.net.reconstruct(self.net.decode(mu))  # (B, F)
        return (x - recon).pow(2).sum(dim=-1)


def log_mean_exp(values: Tensor, log_k: float) -> Tensor:
    """log((1/K) sum_k exp(values_k)) over the first axis, (K, B) -> (B,); log_k = log K.

    By hand, shifted by the max, so no runtime's reduction can overflow or underflow to -inf.
    K comes in as a Python float so the traced graph holds a constant, not a shape lookup.
    """
    peak = values.max(dim=0).values  # (B,)
    return (values - peak).exp().sum(dim=0).log() + peak - log_k


class VaeScorer(_Wrapped):
    """Raw rows -> score, neg_elbo, iwae_nll, recon_error, kl, recon_prob_nll, latent_mu,
    latent_logvar.

    All scores are in nats (recon_error: squared error in model space); higher = more anomalous.
    recon_prob_nll is An & Cho's (2015) reconstruction probability in log space,
    -log (1/K) sum_k p(x | z_k) with z_k ~ q(z|x) the same fixed draws: unlike neg_elbo it has no
    KL term, and unlike recon_error it weighs each feature's error by the decoder's variance.
    """

    eps: Tensor  # (K, 1, Z)
    eps_sq_sum: Tensor  # (K, 1)

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, eps: Tensor) -> None:
        super().__init__(model)
        self.pre = Preprocess(preprocessing)
        self.register_buffer("eps", eps)  # (K, 1, Z)
        # log q(z_k|x) needs sum_j eps_kj^2; precomputed because eps is fixed.
        self.register_buffer("eps_sq_sum", eps.pow(2).sum(dim=-1))  # (K, 1)
        self.log_k = math.log(eps.shape[0])

    def forward(self, raw: Tensor) -> tuple[Tensor, ...]:
        x = self.pre(raw)  # (B, F)
        mu, logvar = self.net.encode(x)  # (B, Z), (B, Z)
        assert logvar is not None, "a VAE encoder returns logvar"
        sigma = torch.exp(0.5 * logvar)
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - 1.0 - logvar).sum(dim=-1)  # (B,)

        z = mu + sigma * self.eps  # (B, Z) with (K, 1, Z) -> (K, B, Z)
        log_px = self.net.log_px(x, self.decode_flat(z))  # (K, B)
        neg_elbo = kl - log_px.mean(dim=0)  # (B,); beta = 1 even for beta-VAEs

        # log w_k = log p(x|z_k) + log N(z_k; 0, I) - log N(z_k; mu, sigma); the 2*pi terms cancel
        # and (z_k - mu) / sigma is eps_k exactly.
        log_w = log_px + 0.5 * (self.eps_sq_sum + logvar.sum(dim=-1) - z.pow(2).sum(dim=-1))
        iwae_nll = -log_mean_exp(log_w, self.log_k)  # (K, B) -> (B,)
        # Jensen: recon_prob_nll <= -mean_k log p(x|z_k) = neg_elbo - kl.
        recon_prob_nll = -log_mean_exp(log_px, self.log_k)  # (K, B) -> (B,)

        recon_error = self.recon_error(x, mu)
        score = neg_elbo.clone()  # the default kind, under its own output name
        return score, neg_elbo, iwae_nll, recon_error, kl, recon_prob_nll, mu, logvar


class AeScorer(_Wrapped):
    """Raw rows -> score (= recon_error), recon_error, latent_mu."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__(model)
        self.pre = Preprocess(preprocessing)

    def forward(self, raw: Tensor) -> tuple[Tensor, ...]:
        x = self.pre(raw)  # (B, F)
        mu, _ = self.net.encode(x)  # (B, Z)
        recon_error = self.recon_error(x, mu)  # (B,)
        return recon_error.clone(), recon_error, mu


class Encoder(_Wrapped):
    """Raw rows -> latent_mu (and latent_logvar for VAEs)."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, variational: bool) -> None:
        super().__init__(model)
        self.pre = Preprocess(preprocessing)
        self.variational = variational

    def forward(self, raw: Tensor) -> tuple[Tensor, ...]:
        mu, logvar = self.net.encode(self.pre(raw))  # (B, F) -> (B, Z), (B, Z)
        if self.variational:
            assert logvar is not None, "a VAE encoder returns logvar"
            return mu, logvar
        return (mu,)


class Decoder(_Wrapped):
    """latent (B, Z) -> reconstruction (B, F): the decoder's mean in model space."""

    def forward(self, z: Tensor) -> Tensor:
        return self.net.reconstruct(self.net.decode(z))  # (B, Z) -> (B, F)


def build_graphs(
    model: nn.Module,
    *,
    model_kind: str,
    n_features: int,
    latent_dim: int,
    n_importance_samples: int,
    preprocessing: Preprocessing,
    seed: int,
) -> list[GraphDef]:
    """Scorer, encoder and decoder for one trained model (left in eval mode); the family
    (latentwatch.families) says which scorer and which score kinds."""
    model.eval()
    fam = family(model_kind)
    variational = fam.variational
    latent = {name: [latent_dim] for name in fam.latent_outputs}
    scorer: nn.Module
    if variational:
        eps = fixed_noise(n_importance_samples, latent_dim, seed)
        scorer = VaeScorer(model, preprocessing, eps)
    else:
        scorer = AeScorer(model, preprocessing)
    scalar: list[int] = []
    scorer_outputs = {name: scalar for name in ("score", *fam.score_kinds)} | latent
    graphs = [
        GraphDef("scorer", scorer, "input", n_features, scorer_outputs),
        GraphDef("encoder", Encoder(model, preprocessing, variational), "input", n_features,
                 latent),
        GraphDef("decoder", Decoder(model), "latent", latent_dim,
                 {"reconstruction": [n_features]}),
    ]
    for graph in graphs:
        graph.module.eval()
    return graphs


def run_torch(graph: GraphDef, inputs: Tensor) -> dict[str, Tensor]:
    """The graph's outputs by name, computed in PyTorch (the reference for parity)."""
    with torch.no_grad():
        result = graph.module(inputs)
    values: Sequence[Tensor] = (result,) if isinstance(result, Tensor) else result
    return dict(zip(graph.outputs, values, strict=True))
