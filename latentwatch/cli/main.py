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
from typing import NoReturn

from latentwatch import __version__
from latentwatch.cli import arg_types, generate_args, health, train_args, triton_repo
from latentwatch.errors import LatentwatchError

# Command -> the module whose `run(args)` carries it out.
COMMANDS = {
    "train": "latentwatch.cli.train",
    "export": "latentwatch.cli.export",
    "bootstrap": "latentwatch.cli.bootstrap",
    "serve": "latentwatch.cli.serve",
    "score": "latentwatch.cli.score",
    "bias-report": "latentwatch.cli.bias_report",
    "recalibrate": "latentwatch.cli.recalibrate",
    "token": "latentwatch.cli.token",
    "keygen": "latentwatch.cli.sign",
    "sign": "latentwatch.cli.sign",
    "generate": "latentwatch.cli.generate",
    "traverse": "latentwatch.cli.traverse",
    "translate": "latentwatch.cli.translate",
    "triton-repo": "latentwatch.cli.triton_repo",
    "health": "latentwatch.cli.health",
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Parser(argparse.ArgumentParser):
    """Bad arguments as one line on stderr and exit code 2 (argparse's code), no usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _document_defaults(parser: argparse.ArgumentParser) -> None:
    """Appends "(default: ...)" to each option whose help does not name its default yet.

    Options defaulting to None must say in words what None means (the CLI test checks it).
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _document_defaults(subparser)
            continue
        if (not action.option_strings or action.required or action.help in (None, argparse.SUPPRESS)
                or action.default in (None, argparse.SUPPRESS) or "default" in action.help):
            continue
        action.help += " (default: %(default)s)"


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a training run to ONNX into a model repository")
    p.add_argument("run_dir", type=Path, help="run directory written by `latentwatch train`")
    p.add_argument("--repo", required=True, type=Path,
                   help="model repository; the run becomes the model's next version")
    p.add_argument("--name", required=True, help="model name in the repository")
    p.add_argument("--default-alpha", type=arg_types.fraction, default=0.05,
                   help="false-alarm rate the version flags at when a request names none")
    p.add_argument("--select-statistics", action=argparse.BooleanOptionalAction, default=None,
                   help="choose the second stage's statistics per model from held-out normal "
                        "rows against synthetic outliers, no labels (default: on)")
    p.add_argument("--n-importance-samples", type=arg_types.positive_int, default=None,
                   metavar="K", help="fixed latent draws the scorer decodes per row, in place "
                   "of the run's (K is a scoring choice: no retraining; default: the run's)")
    p.add_argument("--knn-reference-rows", type=arg_types.positive_int, default=None,
                   metavar="N", help="training rows the second stage's kNN reference keeps "
                   "(default: by row width, see README, Score kinds)")


def _names(text: str) -> list[str]:
    """Comma-separated names; export.bootstrap checks them (importing it here loads torch)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _add_bootstrap(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bootstrap",
        help="train and export the default models (digits-vae, digits-ae, digits-gan, "
             "digits-cgan, digits-pix2pix) if the repo is empty",
    )
    p.add_argument("--repo", required=True, type=Path, help="model repository to fill")
    p.add_argument("--models", type=_names, default=None, metavar="NAME[,NAME...]",
                   help="some of the default models, comma-separated (default: all five)")
    p.add_argument("--max-epochs", type=arg_types.positive_int, default=None,
                   help="cap on every model's epochs, for a quick look (default: each "
                        "model's own)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="keep the training runs here, sample grids under NAME/samples/ "
                        "(default: a temporary directory, removed)")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve every model version in a repository over gRPC")
    p.add_argument("--repo", type=Path, default=None,
                   help="model repository (default: $LATENTWATCH_REPO, else model_repository)")
    p.add_argument("--host", default=None,
                   help="address to bind (default: $LATENTWATCH_HOST, else 127.0.0.1)")
    p.add_argument("--port", type=arg_types.port, default=None,
                   help="gRPC port (default: $LATENTWATCH_PORT, else 50051)")
    p.add_argument("--metrics-port", type=arg_types.port, default=None,
                   help="Prometheus port (default: $LATENTWATCH_METRICS_PORT, else 9090)")
    p.add_argument("--http-port", type=arg_types.port_or_off,
                   default=None, help="KServe v2 REST port (default: $LATENTWATCH_HTTP_PORT, "
                                      "else 8000; 0: any free port, -1: off)")
    p.add_argument("--workers", type=arg_types.positive_int, default=None,
                   help="server processes sharing the ports (default: $LATENTWATCH_WORKERS, "
                        "else 1); worker i serves metrics on metrics-port + i")
    p.add_argument("--backend", choices=("onnxruntime", "triton"), default=None,
                   help="what runs the graphs (default: $LATENTWATCH_BACKEND, else onnxruntime)")
    p.add_argument("--triton-url", default=None,
                   help="Triton's gRPC HOST:PORT for --backend triton (default: "
                        "$LATENTWATCH_TRITON_URL, else 127.0.0.1:8001)")
    p.add_argument("--tls-cert", type=Path, default=None,
                   help="PEM certificate chain: TLS on the gRPC and metrics ports, re-read "
                        "when it changes (default: $LATENTWATCH_TLS_CERT, else plaintext)")
    p.add_argument("--tls-key", type=Path, default=None,
                   help="PEM private key of --tls-cert (default: $LATENTWATCH_TLS_KEY)")
    p.add_argument("--tls-client-ca", type=Path, default=None,
                   help="PEM CA bundle: clients must present a certificate it signed (mTLS) "
                        "(default: $LATENTWATCH_TLS_CLIENT_CA, else no client certificates)")
    p.add_argument("--auth-tokens", type=Path, default=None,
                   help="token file (see `latentwatch token`): every call but health needs a "
                        "token (default: $LATENTWATCH_AUTH_TOKENS, else no authentication)")


def _add_connection(p: argparse.ArgumentParser) -> None:
    """TLS and token flags of the commands that talk to a server."""
    g = p.add_argument_group("security", "for a server with TLS or tokens")
    g.add_argument("--tls-ca", type=Path, default=None,
                   help="PEM CA that signed the server's certificate: connect over TLS "
                        "(default: plaintext, or the system's CAs with --tls-cert)")
    g.add_argument("--tls-cert", type=Path, default=None,
                   help="PEM client certificate for mTLS, with --tls-key (default: none)")
    g.add_argument("--tls-key", type=Path, default=None,
                   help="PEM private key of --tls-cert (default: none)")
    g.add_argument("--token-file", type=Path, default=None,
                   help="file holding the bearer token (default: $LATENTWATCH_TOKEN, else no "
                        "token)")


def _add_token(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "token", help="create a bearer token: its hash goes to the token file, it is printed once"
    )
    p.add_argument("--tokens-file", required=True, type=Path,
                   help="token file the server reads (--auth-tokens); created if missing")
    p.add_argument("--name", required=True, help="who or what the token is for; unique in the file")
    p.add_argument("--scopes", required=True,
                   help="comma-separated: score (Score, ScoreStream, Encode), reports "
                        "(BiasReport), generate, admin, read (ListModels, GetModel)")
    p.add_argument("--models", default=None,
                   help="comma-separated model names the token may use (default: every model)")


def _add_retry(p: argparse.ArgumentParser) -> None:
    """Retry flags (latentwatch.client.retry) of the commands that stream to servers."""
    g = p.add_argument_group("retries", "calls refused with UNAVAILABLE or RESOURCE_EXHAUSTED")
    g.add_argument("--retries", type=arg_types.positive_int, default=6,
                   help="attempts of a call (a stream: in a row without an answer) (default: 6)")
    g.add_argument("--backoff-initial", type=arg_types.positive_float, default=0.1,
                   help="seconds: the cap of the first wait, doubled per failure (default: 0.1)")
    g.add_argument("--backoff-max", type=arg_types.positive_float, default=5.0,
                   help="seconds: the cap of every wait; waits are drawn below it (default: 5)")


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score a data source against a running server")
    p.add_argument("--server", required=True,
                   help="HOST:PORT, several comma-separated (taken in turn), or "
                        "dns:///NAME:PORT (every address of NAME, e.g. a headless Service)")
    p.add_argument("--model", required=True, help="model name on the server")
    p.add_argument("--version", default="", help="model version (default: latest)")
    p.add_argument("--data", required=True,
                   help="digits, or a .csv/.tsv/.parquet/.arrow/.npy/.npz/IDX .gz file")
    p.add_argument("--out", required=True, type=Path, help="CSV to write, one row per input")
    p.add_argument("--delimiter", default=None,
                   help="CSV field delimiter (default: ',' and a tab for .tsv)")
    p.add_argument("--columns", default=None,
                   help="comma-separated feature columns, by name or 0-based index "
                        "(default: every column but the id column)")
    p.add_argument("--id-column", default=None,
                   help="column passed through as the first CSV column `id` (default: `row`, "
                        "the row number)")
    p.add_argument("--group-column", default=None,
                   help="column (CSV/TSV/Parquet/Arrow) of each row's group: p-values against "
                        "that group's calibration rows, for a version recalibrated with "
                        "--group-column (default: none, marginal p-values)")
    p.add_argument("--timeout", type=arg_types.positive_float, default=10.0,
                   help="seconds for connecting and for each unary call (default: 10)")
    p.add_argument("--alpha", type=float, default=None,
                   help="false-alarm rate for is_outlier (default: the model's)")
    p.add_argument("--fdr", type=float, default=None,
                   help="also flag with Benjamini-Hochberg at this false discovery rate "
                        "(default: off)")
    p.add_argument("--batch-rows", type=arg_types.positive_int, default=1024,
                   help="rows per request")
    p.add_argument("--score-kind", default="",
                   help="kind for score, p-values and decisions (default: the model's)")
    p.add_argument("--explain", action="store_true",
                   help="add each row's most unusual features and their contributions "
                        "(top<r>_feature, top<r>_contribution) to the CSV (default: off)")
    p.add_argument("--explain-top-k", type=arg_types.positive_int, default=5,
                   help="features per row that --explain adds (default: 5)")
    p.add_argument("--anomaly-maps", type=Path, default=None,
                   help="directory for one PNG per image row: the image beside the heat map "
                        "of its pixels' contributions (default: none written)")
    _add_connection(p)
    _add_retry(p)


def _add_bias_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bias-report",
        help="latent-density bias report of a data source (JSON and/or self-contained HTML)",
    )
    p.add_argument("--server", required=True,
                   help="HOST:PORT, several comma-separated (taken in turn), or dns:///NAME:PORT")
    p.add_argument("--model", required=True, help="model name on the server")
    p.add_argument("--version", default="", help="model version (default: latest)")
    p.add_argument("--data", required=True, help="digits, or a .npy/.npz/.csv/IDX .gz file")
    p.add_argument("--groups", type=Path, default=None,
                   help="CSV with a header, one line per data row: group label columns and an "
                        "optional `id` column (default: no groups)")
    p.add_argument("--id-column", default=None,
                   help="column of --data (CSV/TSV/Parquet/Arrow) that names the rows in the "
                        "report, instead of an `id` column in --groups (default: none)")
    p.add_argument("--html", type=Path, default=None, help="HTML report to write (default: none)")
    p.add_argument("--json", type=Path, default=None, help="JSON report to write (default: none)")
    p.add_argument("--bins", type=int, default=None,
                   help="histogram bins per latent dimension (default: 10)")
    p.add_argument("--alpha", type=float, default=None, help="density smoothing (default 0.001)")
    p.add_argument("--mode", default=None,
                   help="resampling weights: max (the sparsest dimension decides; default), "
                        "paper (product over the dimensions) or knn (k-nearest-neighbour "
                        "density of the joint means)")
    p.add_argument("--top-k", type=int, default=None,
                   help="sparsest and densest rows to name (default 20)")
    p.add_argument("--sparse-fraction", type=float, default=None,
                   help="share of rows, sparsest first, that group ratios compare (default 0.1)")
    p.add_argument("--significance-level", type=float, default=None,
                   help="groups are flagged only when significant at this level after "
                        "Benjamini-Hochberg; intervals at 1 - it (default 0.05)")
    p.add_argument("--n-decoded", type=int, default=None,
                   help="sparsest and densest rows to decode for the HTML (default: the server's)")
    p.add_argument("--density", default=None,
                   help="what ranks the rows: knn (k-nearest-neighbour density of the joint "
                        "latent means; the server's default) or histogram (product of the "
                        "per-dimension histograms)")
    p.add_argument("--chunk-rows", type=int, default=4096, help="rows per request chunk")
    p.add_argument("--max-rows", type=int, default=None,
                   help="use at most this many rows (default: all)")
    _add_connection(p)


def _add_recalibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recalibrate",
        help="new normal rows -> a new calibration as the next version of a model, no retraining",
    )
    p.add_argument("--repo", required=True, type=Path, help="model repository")
    p.add_argument("--model", required=True, help="model name in the repository")
    p.add_argument("--version", default="",
                   help="version whose graphs to recalibrate (default: latest)")
    p.add_argument("--data", required=True,
                   help="normal rows: digits, or a .npy/.npz/.csv/IDX .gz file")
    p.add_argument("--max-rows", type=arg_types.positive_int, default=None,
                   help="use at most this many rows (default: all)")
    p.add_argument("--default-alpha", type=arg_types.fraction, default=None,
                   help="default alpha of the new version (default: the source version's)")
    p.add_argument("--group-column", default=None,
                   help="column of --data (CSV/TSV/Parquet/Arrow) of each row's group: the "
                        "version keeps it, for group-conditional p-values (default: none)")


def _add_sign(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keygen", help="create an ed25519 key pair for signing model versions")
    p.add_argument("--out", required=True, type=Path,
                   help="PREFIX: writes PREFIX.key (private, mode 0600) and PREFIX.pub (the "
                        "line for the server's signing keys file); never overwrites")
    p = sub.add_parser(
        "sign", help="sign a model version (its manifest.json, which lists every file's sha256)"
    )
    p.add_argument("--key", required=True, type=Path,
                   help="private key PEM written by `latentwatch keygen`")
    p.add_argument("version_dir", type=Path,
                   help="<repo>/<model>/<version>/ to sign; its files must match the manifest")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="latentwatch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                        help="logging threshold on stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (train_args.add_train, _add_export, _add_bootstrap, _add_serve, _add_score,
                _add_bias_report, _add_recalibrate, _add_token, _add_sign):
        add(sub)
    generate_args.add_commands(sub, _add_connection, arg_types.positive_int,
                               arg_types.positive_float)
    triton_repo.add_command(sub)
    health.add_command(sub, _add_connection, arg_types.positive_float)
    _document_defaults(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a one-line error from _Parser (code 2)
        return done.code if isinstance(done.code, int) else 2
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        # A command may return its own exit code (health: 1 when not SERVING).
        status = import_module(COMMANDS[args.command]).run(args)
    except LatentwatchError as err:
        print(f"latentwatch {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
