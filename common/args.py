"""Argument parsing shared by every command: one family of validators, one-line errors.

A bad argument gets one line naming the flag, the value and the rule, and exit code 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line, like every other error here."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def checked(kind: type, test: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse `type` that converts with `kind` and accepts values passing `test`.

    `what` completes "expected ...": say the rule and, for a bound, why it is there.
    """

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value) or not test(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return convert


def int_between(low: int, high: int, why: str = "") -> Callable[[str], int]:
    """A whole number in [low, high]; `why` says where the bound comes from."""
    reason = f" ({why})" if why else ""
    return checked(int, lambda v: low <= v <= high, f"a whole number from {low} to {high}{reason}")


positive_int = checked(int, lambda v: v >= 1, "a whole number of at least 1")
non_negative_int = checked(int, lambda v: v >= 0, "a whole number of at least 0")
positive_float = checked(float, lambda v: v > 0, "a number greater than 0")
non_negative_float = checked(float, lambda v: v >= 0, "a number of at least 0")
fraction = checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
port = int_between(0, 65535, "a TCP port; 0 turns the server off")
