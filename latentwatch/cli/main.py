"""The `latentwatch` command.

Parsing and dispatch only. Each command is one module of latentwatch.cli with a `run(args)`,
imported when that command runs: `serve` and `score` must never import torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module
from pathlib import Path

from latentwatch.errors import LatentwatchError
from latentwatch.families import KINDS

# Command -> the module whose `run(args)` carries it out.
COMMANDS = {
    "train": "latentwatch.cli.train",
    "export": "latentwatch.cli.export",
    "bootstrap": "latentwatch.cli.bootstrap",
    "serve": "latentwatch.cli.serve",
    "score": "latentwatch.cli.score",
    "bias-report": "latentwatch.cli.bias_report",
}


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an autoencoder or VAE on a data source")
    p.add_argument("--data", required=True, help="digits, or a .npy/.npz/.csv/IDX .gz file")
    p.add_argument("--model", required=True, choices=list(KINDS),
                   help="dbvae: a VAE trained with adaptive resampling towards sparse latent "
                        "regions (DB-VAE)")
    p.add_argument("--out", required=True, type=Path, help="run directory to create")
    p.add_argument("--body", default="auto", choices=["auto", "mlp", "conv"],
                   help="auto: conv for images, mlp for tabular rows")
    p.add_argument("--hidden", default=None,
                   help="comma-separated widths (mlp) or channels (conv), e.g. 512,256")
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--beta", type=float, default=None, help="KL weight (beta-vae; default 2)")
    p.add_argument("--decoder", default="auto",
                   choices=["auto", "bernoulli", "gaussian", "gaussian-hetero"],
                   help="auto: bernoulli for images, gaussian (learned per-feature variance) for "
                        "tabular rows; gaussian-hetero predicts a variance per row and feature")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--n-importance-samples", type=int, default=None,
                   help="K fixed noise draws for the exported ELBO/IWAE scores")
    p.add_argument("--calibration-fraction", type=float, default=None,
                   help="share of rows held out for conformal calibration (never trained on)")
    p.add_argument("--validation-fraction", type=float, default=None,
                   help="share of rows held out for early stopping")
    p.add_argument("--max-rows", type=int, default=None, help="use at most this many rows")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("dbvae", "resampling and classifier head (--model dbvae only)")
    g.add_argument("--debias-bins", type=int, default=None,
                   help="histogram bins per latent dimension (default 10)")
    g.add_argument("--debias-alpha", type=float, default=None,
                   help="density smoothing: smaller favours sparse rows more (default 0.001)")
    g.add_argument("--debias-mode", default=None, choices=["paper", "max"],
                   help="paper: product over dimensions; max: the sparsest dimension decides "
                        "(default max)")
    g.add_argument("--debias-warmup-epochs", type=int, default=None,
                   help="plain epochs before resampling starts (default 1)")
    g.add_argument("--classifier", action="store_true", default=None,
                   help="train a classifier head on the latent means jointly (needs labels)")
    g.add_argument("--classifier-weight", type=float, default=None,
                   help="weight of the classifier's cross-entropy in the loss (default 1)")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a training run to ONNX into a model repository")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--repo", required=True, type=Path)
    p.add_argument("--name", required=True, help="model name in the repository")
    p.add_argument("--default-alpha", type=float, default=0.05)


def _add_bootstrap(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bootstrap",
        help="train and export the default models (digits-vae, digits-ae) if the repo is empty",
    )
    p.add_argument("--repo", required=True, type=Path)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve every model version in a repository over gRPC")
    p.add_argument("--repo", type=Path, default=None, help="(LATENTWATCH_REPO)")
    p.add_argument("--host", default=None, help="(LATENTWATCH_HOST)")
    p.add_argument("--port", type=int, default=None, help="gRPC port (LATENTWATCH_PORT)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="Prometheus port (LATENTWATCH_METRICS_PORT)")


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score a data source against a running server")
    p.add_argument("--server", required=True, help="HOST:PORT")
    p.add_argument("--model", required=True)
    p.add_argument("--version", default="", help="model version (default: latest)")
    p.add_argument("--data", required=True, help="digits, or a .npy/.npz/.csv/IDX .gz file")
    p.add_argument("--out", required=True, type=Path, help="CSV to write, one row per input")
    p.add_argument("--alpha", type=float, default=None,
                   help="false-alarm rate for is_outlier (default: the model's)")
    p.add_argument("--fdr", type=float, default=None,
                   help="also flag with Benjamini-Hochberg at this false discovery rate")
    p.add_argument("--batch-rows", type=int, default=1024)
    p.add_argument("--score-kind", default="",
                   help="kind for score, p-values and decisions (default: the model's)")


def _add_bias_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bias-report",
        help="latent-density bias report of a data source (JSON and/or self-contained HTML)",
    )
    p.add_argument("--server", required=True, help="HOST:PORT")
    p.add_argument("--model", required=True)
    p.add_argument("--version", default="", help="model version (default: latest)")
    p.add_argument("--data", required=True, help="digits, or a .npy/.npz/.csv/IDX .gz file")
    p.add_argument("--groups", type=Path, default=None,
                   help="CSV with a header, one line per data row: group label columns and an "
                        "optional `id` column")
    p.add_argument("--html", type=Path, default=None, help="HTML report to write")
    p.add_argument("--json", type=Path, default=None, help="JSON report to write")
    p.add_argument("--bins", type=int, default=None, help="histogram bins per latent dimension")
    p.add_argument("--alpha", type=float, default=None, help="density smoothing (default 0.001)")
    p.add_argument("--mode", default=None,
                   help="max (the sparsest dimension decides; default) or paper (product over "
                        "the dimensions)")
    p.add_argument("--top-k", type=int, default=None,
                   help="sparsest and densest rows to name (default 20)")
    p.add_argument("--sparse-fraction", type=float, default=None,
                   help="share of rows, sparsest first, that group ratios compare (default 0.1)")
    p.add_argument("--n-decoded", type=int, default=None,
                   help="sparsest and densest rows to decode for the HTML (default: the server's)")
    p.add_argument("--chunk-rows", type=int, default=4096, help="rows per request chunk")
    p.add_argument("--max-rows", type=int, default=None, help="use at most this many rows")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentwatch", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_export, _add_bootstrap, _add_serve, _add_score,
                _add_bias_report):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import_module(COMMANDS[args.command]).run(args)
    except LatentwatchError as err:
        print(f"latentwatch {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
