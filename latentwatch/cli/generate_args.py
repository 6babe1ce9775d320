"""The arguments of `latentwatch generate`, `traverse` and `translate` (parsed in main.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def add_commands(
    sub: argparse._SubParsersAction,
    add_connection: Callable[[argparse.ArgumentParser], None],
    positive_int: Callable[[str], float],
    positive_float: Callable[[str], float],
) -> None:
    """Adds the three commands; main.py passes its connection flags and number types."""
    _add_generate(sub, add_connection, positive_int, positive_float)
    _add_traverse(sub, add_connection, positive_int, positive_float)
    _add_translate(sub, add_connection, positive_int, positive_float)


def _add_served(p: argparse.ArgumentParser, positive_float: Callable[[str], float],
                model_required: bool = True) -> None:
    p.add_argument("--server", required=True, help="HOST:PORT")
    if model_required:
        p.add_argument("--model", required=True, help="model name on the server")
    p.add_argument("--version", default="", help="model version (default: latest)")
    p.add_argument("--png", required=True, type=Path, help="labelled image grid to write")
    p.add_argument("--npy", type=Path, default=None,
                   help="also write the samples as a .npy array (default: none)")
    p.add_argument("--timeout", type=positive_float, default=30.0,
                   help="seconds for connecting and for the call (default: 30)")


def _add_generate(sub: argparse._SubParsersAction,
                  add_connection: Callable[[argparse.ArgumentParser], None],
                  positive_int: Callable[[str], float],
                  positive_float: Callable[[str], float]) -> None:
    p = sub.add_parser(
        "generate", help="samples from a served generator or VAE decoder as a labelled PNG grid"
    )
    p.add_argument("--model", default=None,
                   help="model name on the server (default: the report's model with "
                        "--from-bias-report)")
    _add_served(p, positive_float, model_required=False)
    p.add_argument("-n", type=positive_int, default=64, help="samples to draw, at most 4096")
    p.add_argument("--label", type=int, default=None,
                   help="class label of every sample, class-conditional models only (default: "
                        "one grid row per class)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the draws: the same seed gives the same samples (default: a "
                        "fresh one, printed)")
    p.add_argument("--truncation", type=positive_float, default=None,
                   help="redraw latent values beyond +-this many standard deviations (default: "
                        "no truncation)")
    p.add_argument("--columns", type=positive_int, default=None,
                   help="grid columns (default: about the square root of n)")
    p.add_argument("--from-bias-report", type=Path, default=None,
                   help="bias report JSON: sample around the latent means of its sparsest rows "
                        "(default: sample the prior)")
    p.add_argument("--data", default=None,
                   help="the data the bias report was made of, encoded again when the report "
                        "carries no latent means (older reports; default: none)")
    p.add_argument("--centers", type=positive_int, default=8,
                   help="how many of the report's sparsest rows to sample around")
    p.add_argument("--spread", type=positive_float, default=None,
                   help="standard deviation of the draws around each row's latent mean "
                        "(default: the server's, 0.5)")
    add_connection(p)


def _add_traverse(sub: argparse._SubParsersAction,
                  add_connection: Callable[[argparse.ArgumentParser], None],
                  positive_int: Callable[[str], float],
                  positive_float: Callable[[str], float]) -> None:
    p = sub.add_parser(
        "traverse", help="a latent traversal of a served model as a labelled PNG grid, with how "
                         "much each dimension changes the output"
    )
    _add_served(p, positive_float)
    p.add_argument("--data", default=None,
                   help="data source whose row --row is encoded as the base point (default: "
                        "--latent, else the prior mean 0)")
    p.add_argument("--row", type=int, default=0, help="row of --data to start from")
    p.add_argument("--latent", default=None,
                   help="comma-separated base latent point, one value per dimension (default: "
                        "the encoded row, else 0)")
    p.add_argument("--dimensions", default=None,
                   help="comma-separated latent dimensions to sweep (default: all)")
    p.add_argument("--low", type=float, default=None,
                   help="first value of each swept dimension (default: -3)")
    p.add_argument("--high", type=float, default=None,
                   help="last value of each swept dimension (default: 3)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="values per dimension, 2 to 64 (default: 7)")
    p.add_argument("--label", type=int, default=None,
                   help="class label, class-conditional models only (default: 0)")
    add_connection(p)


def _add_translate(sub: argparse._SubParsersAction,
                   add_connection: Callable[[argparse.ArgumentParser], None],
                   positive_int: Callable[[str], float],
                   positive_float: Callable[[str], float]) -> None:
    p = sub.add_parser(
        "translate", help="images through a served translator (pix2pix) as a PNG grid: input "
                          "and output side by side"
    )
    _add_served(p, positive_float)
    p.add_argument("--data", required=True,
                   help="images: digits, or a .npy/.npz/IDX .gz file of the translator's inputs")
    p.add_argument("--max-rows", type=positive_int, default=8, help="images to translate")
    p.add_argument("--sketch", action="store_true",
                   help="send edge maps of the images (as pix2pix trains on) and show the "
                        "images beside them (default: send the images as they are)")
    add_connection(p)
