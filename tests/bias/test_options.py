"""BiasOptions: the defaults and the one validation the service runs, n_decoded included."""

from __future__ import annotations

import pytest

from latentwatch.bias.options import DEFAULT_N_DECODED, BiasOptions
from latentwatch.errors import InvalidInput
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.bias import options_from_proto, options_to_proto


def test_decoded_rows_default_to_eight_capped_at_top_k() -> None:
    assert DEFAULT_N_DECODED == 8
    assert BiasOptions().decoded_rows == 8
    assert BiasOptions(top_k=3).decoded_rows == 3
    assert BiasOptions(top_k=3, n_decoded=0).decoded_rows == 0
    assert BiasOptions(n_decoded=20).validated().decoded_rows == 20


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (BiasOptions(top_k=3, n_decoded=4), r"n_decoded: expected 0 to top_k \(3\) rows, got 4"),
        (BiasOptions(n_decoded=-1), r"n_decoded: expected 0 to top_k \(20\) rows, got -1"),
        (BiasOptions(bins=1), "bins: expected 2 to 1000 histogram bins, got 1"),
    ],
)
def test_validation_names_the_option_and_its_range(options: BiasOptions, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        options.validated()


def test_the_wire_carries_the_options_as_given_for_the_service_to_validate() -> None:
    sent = options_to_proto(bins=1, mode="median", n_decoded=-1)
    got = options_from_proto(sent)  # no validation on the way: the service runs it once
    assert (got.bins, got.mode, got.n_decoded) == (1, "median", -1)
    assert (got.alpha, got.top_k) == (BiasOptions().alpha, BiasOptions().top_k)
    assert options_from_proto(pb.BiasReportOptions()) == BiasOptions()


def test_train_takes_every_resampling_mode_and_only_those() -> None:
    import argparse

    from latentwatch.bias.options import MODES
    from latentwatch.cli.train_args import add_train

    parser = argparse.ArgumentParser()
    add_train(parser.add_subparsers(dest="command"))
    for mode in MODES:
        args = parser.parse_args(["train", "--data", "digits", "--model", "dbvae", "--out", "x",
                                  "--debias-mode", mode])
        assert args.debias_mode == mode
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--data", "digits", "--model", "dbvae", "--out", "x",
                           "--debias-mode", "median"])
