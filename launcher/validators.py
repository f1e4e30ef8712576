"""The launcher's own argument checks (the shared ones live in common/args.py).

Each raises argparse.ArgumentTypeError with the reason, so common.args.ArgumentParser prints
one line and exits 2 before anything is created.
"""

from __future__ import annotations

import argparse
import math

from common.layout import run_name_for_lr


def learning_rate(text: str) -> float:
    """One learning rate: a finite number greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"learning rate {text!r} must be a finite number above 0")
    return value


def learning_rates(text: str) -> list[float]:
    """`0.1,0.01,0.001`: distinct learning rates, in the order given."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError("expected learning rates such as 0.1,0.01,0.001")
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item between commas")
    return distinct([learning_rate(item) for item in items])


def distinct(lrs: list[float]) -> list[float]:
    """The list itself; two rates that name the same run (0.01 and 1e-2) are an error."""
    seen: dict[str, float] = {}
    for lr in lrs:
        name = run_name_for_lr(lr)
        if name in seen:
            raise argparse.ArgumentTypeError(f"learning rate {lr:g} is given twice")
        seen[name] = lr
    return lrs


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return value
