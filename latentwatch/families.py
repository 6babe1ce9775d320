"""Model families: the one place a model kind string ("ae", "vae", ...) is compared.

Every other module asks the registry what a kind can do: `family(kind).variational`,
`.capabilities`, `.score_kinds`, `.graphs`, ... Torch-free: the torch-side parts (model class,
loss, graph builder) are import strings ("module:attribute"), resolved by `resolve()` only from
latentwatch.models and latentwatch.export, so the service can import this module freely.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

# What a served version can do.
Capability = Literal["score", "encode", "decode", "generate", "translate"]
CAPABILITIES: tuple[Capability, ...] = ("score", "encode", "decode", "generate", "translate")

# Score kinds of the fused scorer graphs (latentwatch.export.graphs computes them in this order).
VAE_SCORE_KINDS = ("neg_elbo", "iwae_nll", "recon_error", "kl", "recon_prob_nll")
AE_SCORE_KINDS = ("recon_error",)

Combine = Literal["max", "max_abs", "sum"]


@dataclass(frozen=True)
class SecondStagePlan:
    """The statistics the export's second stage combines, and how (benchmarks/quality.py)."""

    tabular: tuple[str, ...]
    image: tuple[str, ...]
    combine: Combine = "max"

    def statistics(self, is_image: bool) -> tuple[str, ...]:
        return self.image if is_image else self.tabular


@dataclass(frozen=True)
class Family:
    """One model family: what it is, what it can do, and where its torch-side parts live."""

    kind: str
    description: str
    capabilities: tuple[Capability, ...]
    graphs: tuple[str, ...]  # graph names export writes ("scorer", "encoder", "decoder")
    score_kinds: tuple[str, ...]  # per-row scores of the scorer graph, higher = more anomalous
    variational: bool  # Gaussian encoder (latent_logvar, KL term, importance samples)
    second_stage: SecondStagePlan | None
    # Import strings "module:attribute", resolved with resolve() (models/ and export/ only).
    config_class: str = "latentwatch.models.config:ModelConfig"
    model_class: str = "latentwatch.models.vae:VAE"
    loss: str = "latentwatch.models.vae:vae_loss"
    graph_builder: str = "latentwatch.export.graphs:build_graphs"
    # How training differs: None trains on uniformly shuffled rows; "latent-density" resamples
    # rows towards sparse latent regions each epoch (DB-VAE, latentwatch.models.dbvae).
    resampling: Literal["latent-density"] | None = None
    fixed_beta: float | None = None  # the KL weight the kind requires, when it requires one
    default_beta: float = 1.0
    # Trained against a discriminator (latentwatch.models.gan_training), not by a likelihood:
    # such a kind has no encoder, no latent section and no scorer.
    adversarial: bool = False
    conditional: bool = False  # the generator takes a class label beside z (cGAN)

    @property
    def resamples(self) -> bool:
        """Training draws each epoch's rows by a resampling weight instead of shuffling."""
        return self.resampling is not None

    @property
    def draws_importance_samples(self) -> bool:
        """The scorer averages over fixed latent draws (0 samples in the manifest otherwise)."""
        return self.variational

    @property
    def scores(self) -> bool:
        """The kind exports a scorer: anomaly scores, calibration, bias reports."""
        return "score" in self.capabilities

    @property
    def latent_outputs(self) -> tuple[str, ...]:
        return ("latent_mu", "latent_logvar") if self.variational else ("latent_mu",)


_VAE_PLAN = SecondStagePlan(tabular=("neg_elbo", "log_input_knn"),
                            image=("neg_elbo", "log_recon_error"))
_AE_PLAN = SecondStagePlan(tabular=("log_recon_error", "log_input_knn"),
                           image=("log_recon_error", "log_input_knn"))
_LATENT_GRAPHS = ("scorer", "encoder", "decoder")
_LATENT_CAPABILITIES: tuple[Capability, ...] = ("score", "encode", "decode")
_GAN_CONFIG, _GAN_MODEL = "latentwatch.models.gan:GANConfig", "latentwatch.models.gan:GAN"
_GAN_LOSS = "latentwatch.models.gan:gan_losses"
_GENERATOR_GRAPHS = "latentwatch.export.generator_graphs:build_generator_graphs"

FAMILIES: dict[str, Family] = {
    f.kind: f
    for f in (
        Family(
            kind="ae", description="deterministic autoencoder (reconstruction error only)",
            capabilities=_LATENT_CAPABILITIES, graphs=_LATENT_GRAPHS,
            score_kinds=AE_SCORE_KINDS, variational=False, second_stage=_AE_PLAN,
            model_class="latentwatch.models.ae:AE", loss="latentwatch.models.ae:ae_loss",
        ),
        Family(
            kind="vae", description="variational autoencoder, KL weight 1",
            capabilities=_LATENT_CAPABILITIES, graphs=_LATENT_GRAPHS,
            score_kinds=VAE_SCORE_KINDS, variational=True, second_stage=_VAE_PLAN,
            fixed_beta=1.0,
        ),
        Family(
            kind="beta-vae", description="β-VAE: a VAE with a KL weight other than 1",
            capabilities=_LATENT_CAPABILITIES, graphs=_LATENT_GRAPHS,
            score_kinds=VAE_SCORE_KINDS, variational=True, second_stage=_VAE_PLAN,
            # beta = 4 collapses the posterior on digits (KL ~0.01 nats per row); 2 keeps ~0.7.
            default_beta=2.0,
        ),
        Family(
            kind="dbvae", description="DB-VAE: a VAE trained on rows resampled towards sparse "
            "latent regions (and an optional classifier head)",
            capabilities=_LATENT_CAPABILITIES, graphs=_LATENT_GRAPHS,
            score_kinds=VAE_SCORE_KINDS, variational=True, second_stage=_VAE_PLAN,
            resampling="latent-density",
        ),
        Family(
            kind="gan", description="GAN: a DCGAN-style conv generator for images, an MLP "
            "generator for tabular rows, sampled from z ~ N(0, I)",
            capabilities=("generate",), graphs=("generator",), score_kinds=(),
            variational=False, second_stage=None, adversarial=True,
            config_class=_GAN_CONFIG, model_class=_GAN_MODEL, loss=_GAN_LOSS,
            graph_builder=_GENERATOR_GRAPHS,
        ),
        Family(
            kind="cgan", description="conditional GAN: the class label embedded into both "
            "the generator and the discriminator",
            capabilities=("generate",), graphs=("generator",), score_kinds=(),
            variational=False, second_stage=None, adversarial=True, conditional=True,
            config_class=_GAN_CONFIG, model_class=_GAN_MODEL, loss=_GAN_LOSS,
            graph_builder=_GENERATOR_GRAPHS,
        ),
        Family(
            kind="pix2pix", description="Pix2Pix: image-to-image translation (sketch -> image) "
            "with a U-Net generator and a PatchGAN discriminator",
            capabilities=("translate",), graphs=("translator",), score_kinds=(),
            variational=False, second_stage=None, adversarial=True,
            config_class="latentwatch.models.pix2pix:Pix2PixConfig",
            model_class="latentwatch.models.pix2pix:Pix2Pix",
            loss="latentwatch.models.pix2pix:pix2pix_losses",
            graph_builder="latentwatch.export.generator_graphs:build_translator_graphs",
        ),
    )
}
KINDS: tuple[str, ...] = tuple(FAMILIES)


class UnknownModelKind(ValueError):
    """A model kind the registry does not know."""


def family(kind: str) -> Family:
    """The family of `kind`; UnknownModelKind (a ValueError) lists the known kinds."""
    try:
        return FAMILIES[kind]
    except (KeyError, TypeError):
        raise UnknownModelKind(
            f"unknown model kind {kind!r}: kind must be one of {list(KINDS)}"
        ) from None


def kinds_where(**wanted: Any) -> tuple[str, ...]:
    """Kinds whose family attributes equal `wanted`, e.g. kinds_where(variational=True)."""
    return tuple(
        k for k, f in FAMILIES.items() if all(getattr(f, a) == v for a, v in wanted.items())
    )


def resolve(ref: str) -> Any:
    """The object an import string "package.module:attribute" names (imports the module)."""
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)
