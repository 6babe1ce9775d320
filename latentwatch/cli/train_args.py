"""The arguments of `latentwatch train` (parsed in main.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentwatch.bias.options import MODES
from latentwatch.cli.arg_types import fraction, non_negative_float, positive_float, positive_int
from latentwatch.families import KINDS


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an autoencoder, VAE, GAN or Pix2Pix on a data source")
    p.add_argument("--data", required=True, help="digits, or a .npy/.npz/.csv/IDX .gz file")
    p.add_argument("--model", required=True, choices=list(KINDS),
                   help="dbvae: a VAE trained with adaptive resampling towards sparse latent "
                        "regions (DB-VAE); gan, cgan (class-conditional), pix2pix (sketch -> "
                        "image on edge maps of the images): adversarial, generate only")
    p.add_argument("--out", required=True, type=Path,
                   help="run directory to create; an existing, non-empty one needs --force")
    p.add_argument("--force", action="store_true",
                   help="overwrite the run directory if it exists and is not empty")
    p.add_argument("--body", default="auto", choices=["auto", "mlp", "conv"],
                   help="auto: conv for images, mlp for tabular rows")
    p.add_argument("--hidden", default=None,
                   help="comma-separated widths (mlp) or channels (conv), e.g. 512,256; "
                        "pix2pix: one channel count (default: from the data)")
    p.add_argument("--latent-dim", type=positive_int, default=None,
                   help="size of the latent code (default: from the data)")
    p.add_argument("--beta", type=positive_float, default=None,
                   help="KL weight (default: 2 for beta-vae, 1 otherwise)")
    p.add_argument("--decoder", default="auto",
                   choices=["auto", "bernoulli", "gaussian", "gaussian-hetero"],
                   help="auto: bernoulli for images, gaussian (learned per-feature variance) for "
                        "tabular rows; gaussian-hetero predicts a variance per row and feature")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="most epochs; early stopping usually ends sooner (default: 30 for "
                        "images, from a step budget for tabular rows and for gan, cgan, "
                        "pix2pix)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="rows per step (default: 64 for images, from the row count otherwise)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="Adam learning rate (default: 0.002; 0.0002 for gan, cgan, pix2pix)")
    p.add_argument("--n-importance-samples", type=positive_int, default=None,
                   help="K fixed noise draws for the exported ELBO/IWAE scores (default: by data, "
                        "see README, Score kinds)")
    p.add_argument("--calibration-fraction", type=fraction, default=None,
                   help="share of rows held out for conformal calibration, never trained on "
                        "(default: 0.2)")
    p.add_argument("--validation-fraction", type=fraction, default=None,
                   help="share of rows held out for early stopping (default: 0.1)")
    p.add_argument("--max-rows", type=positive_int, default=None,
                   help="use at most this many rows (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and the weights")
    a = p.add_argument_group("gan, cgan, pix2pix", "adversarial training (these models only)")
    a.add_argument("--held-out-fraction", type=fraction, default=None,
                   help="share of rows held out for evaluation, never trained on (default 0.1)")
    a.add_argument("--edge-threshold", type=positive_float, default=None,
                   help="pix2pix: Sobel magnitude (a unit step is 1) at which a pixel of the "
                        "sketch is an edge (default 0.5)")
    a.add_argument("--spectral-norm", action="store_true", default=None,
                   help="spectral norm on the discriminator's layers (default: off; slower "
                        "and, measured on digits, no better)")
    a.add_argument("--class-loss-weight", type=non_negative_float, default=None,
                   help="cgan: weight of the auxiliary classification loss, a class head on "
                        "the discriminator (AC-GAN; default 0.1, 0: none)")
    g = p.add_argument_group("dbvae", "resampling and classifier head (--model dbvae only)")
    g.add_argument("--debias-bins", type=positive_int, default=None,
                   help="histogram bins per latent dimension (default 10)")
    g.add_argument("--debias-alpha", type=non_negative_float, default=None,
                   help="density smoothing: smaller favours sparse rows more (default 0.001)")
    g.add_argument("--debias-mode", default=None, choices=list(MODES),
                   help="paper: product over dimensions; max: the sparsest dimension decides; "
                        "knn: the k-nearest-neighbour density of the joint means (default knn)")
    g.add_argument("--debias-warmup-epochs", type=int, default=None,
                   help="plain epochs before resampling starts (default 1)")
    g.add_argument("--classifier", action="store_true", default=None,
                   help="train a classifier head on the latent means jointly (needs labels; "
                        "default: off)")
    g.add_argument("--classifier-weight", type=float, default=None,
                   help="weight of the classifier's cross-entropy in the loss (default 1)")
