"""Argument types of the `latentwatch` command: numbers with their ranges, named in errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def number(cast: type, what: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = number(int, "an integer >= 1", lambda v: v >= 1)
port = number(int, "a port in 0..65535 (0: any free port)", lambda v: 0 <= v <= 65535)
port_or_off = number(int, "a port in 0..65535 (0: any free one) or -1 (off)",
                     lambda v: -1 <= v <= 65535)
positive_float = number(float, "a number > 0", lambda v: v > 0 and v != float("inf"))
non_negative_float = number(float, "a number >= 0", lambda v: 0 <= v < float("inf"))
fraction = number(float, "a number in (0, 1)", lambda v: 0 < v < 1)
