"""The trainer flags a sweep passes to every run, checked here without importing the trainer.

The launcher must start without TensorFlow, so it cannot import trainer.config; this table
mirrors the flags a user sets there (tests/test_launcher_render.py compares the two, so a new
trainer flag that is missing here fails a test, not a sweep). Its values are checked with the
trainer's own validators (common.args, common.trainer_args), so a sweep refuses up front what
its runs would refuse, before sweep.json is written. Flags the launcher sets itself
per run (--data, --run-dir, --lr, --metrics-port, --exit-code-on-stop, and the several-workers
flags, which come from the launcher's own --workers) are not in it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from common import args as common_args
from common import trainer_args
from common.args import non_negative_int, positive_int

# Set by the launcher from its --workers (values: trainer.workers) for each worker.
WORKER_FLAGS = ("--workers", "--worker-hosts", "--worker-index")
# Set by the launcher for each run; a user cannot pass them through.
RESERVED = ("--data", "--run-dir", "--lr", "--metrics-port", "--exit-code-on-stop", *WORKER_FLAGS)


def _weights(text: str) -> str:
    """imagenet, none, or a weights file's URI (local or gs://; other schemes are refused)."""
    from common import storage

    if text.lower() not in ("imagenet", "none"):
        try:
            storage.is_gcs(text)
        except storage.StorageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# The trainer's own validators (common.args, common.trainer_args: one owner of every bound),
# so that the launcher refuses what a run would refuse before a sweep writes anything.
_positive = common_args.positive_float
_non_negative = common_args.non_negative_float
_fraction = common_args.fraction

# flag -> converter, a tuple of choices, or None for an on/off switch.
FLAGS: dict[str, Any] = {
    "--steps": positive_int,
    "--epochs": _positive,
    "--image-size": trainer_args.image_size,
    "--fine-tune": ("all", "head"),
    "--head-warmup-steps": non_negative_int,
    "--head-init": ("auto", "fit", "random"),
    "--weights": _weights,
    "--dropout": _fraction,
    "--batch-size": trainer_args.batch_size,
    "--optimizer": ("rmsprop", "sgd", "adam"),
    "--momentum": _fraction,
    "--rmsprop-rho": _fraction,
    "--rmsprop-epsilon": _positive,
    "--lr-schedule": ("exponential", "cosine"),
    "--lr-decay-factor": _positive,
    "--lr-decay-epochs": _positive,
    "--warmup-epochs": _non_negative,
    "--label-smoothing": _fraction,
    "--weight-decay": _non_negative,
    "--precision": ("auto", "float32", "mixed"),
    "--seed": trainer_args.seed,
    "--checkpoint-every": positive_int,
    "--checkpoint-minutes": _positive,
    "--keep-checkpoints": positive_int,
    "--log-every": positive_int,
    "--shuffle-buffer": positive_int,
    "--lease-seconds": trainer_args.lease_seconds,
    "--xla": None,
    "--force": None,
}
_EXCLUSIVE = ("--steps", "--epochs")


def _dest(flag: str) -> str:
    return "trainer_" + flag[2:].replace("-", "_")


_ORDER = "trainer_flags_in_order"


class _Record(argparse.Action):
    """Keeps each trainer flag with its value in the order given on the command line, so
    that the trainer sees them as a helm user's trainerArgs list would give them."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        given = dict(getattr(namespace, _ORDER, None) or {})
        given.pop(self.option_strings[0], None)  # given twice: the last one wins
        given[self.option_strings[0]] = None if self.nargs == 0 else values
        setattr(namespace, _ORDER, given)


def add_to(parser: argparse.ArgumentParser) -> None:
    """Add every pass-through flag to a launcher command, in a group of its own."""
    group = parser.add_argument_group(
        "trainer flags (passed to every run; see python -m trainer --help)"
    )
    for flag, kind in FLAGS.items():
        if kind is None:
            group.add_argument(flag, action=_Record, nargs=0, dest=_dest(flag))
        elif isinstance(kind, tuple):
            group.add_argument(
                flag, action=_Record, dest=_dest(flag), choices=kind, metavar="|".join(kind)
            )
        else:
            group.add_argument(
                flag, action=_Record, dest=_dest(flag), type=_as_given(kind), metavar="X"
            )


def _as_given(convert: Callable[[str], Any]) -> Callable[[str], str]:
    """Check a value with `convert` but keep the user's spelling, which the trainer re-reads."""

    def check_value(text: str) -> str:
        convert(text)
        return text

    check_value.__name__ = getattr(convert, "__name__", "value")
    return check_value


def from_namespace(args: argparse.Namespace) -> list[str]:
    """The pass-through flags given on a launcher command line, in the order given."""
    out: list[str] = []
    for flag, value in (getattr(args, _ORDER, None) or {}).items():
        out += [flag] if value is None else [flag, str(value)]
    return out


def check(args: list[str], where: str) -> list[str]:
    """Validate a list of trainer flags (from values.yaml's trainerArgs); one sentence if bad."""
    from common.cli import UserError

    parser = _ListParser(where)
    add_to(parser)
    args = [str(a) for a in args]
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in WORKER_FLAGS:
            raise UserError(
                f"{where} may not contain {flag}: set trainer.workers (or pass --workers) and the "
                "launcher gives every worker its flags."
            )
        if flag in RESERVED:
            raise UserError(f"{where} may not contain {flag}: the launcher sets it for each run.")
    try:
        parser.parse_args(args)
    except _Bad as exc:
        raise UserError(f"{where}: {exc}") from None
    if any(a.startswith("--") and "=" in a for a in args):
        raise UserError(f"{where}: write each flag and its value as two items, not --flag=value.")
    return merge([], args)  # the order given; a flag given twice keeps its last value


def pairs(args: list[str]) -> list[tuple[str, str | None]]:
    """`["--steps", "9", "--xla"]` -> [("--steps", "9"), ("--xla", None)] (args already checked)."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        if FLAGS.get(args[i], ...) is None:
            out.append((args[i], None))
            i += 1
        else:
            out.append((args[i], args[i + 1]))
            i += 2
    return out


def merge(base: list[str], override: list[str]) -> list[str]:
    """`base` (values.yaml's trainerArgs, in its order) with the flags of `override` winning:
    a flag given in both keeps its place with the new value; new flags go at the end."""
    values = dict(pairs(base))
    for flag, value in pairs(override):
        if flag in _EXCLUSIVE:  # --steps replaces --epochs, and the other way round
            for other in _EXCLUSIVE:
                if other != flag:
                    values.pop(other, None)
        values[flag] = value
    out: list[str] = []
    for flag, value in values.items():
        out += [flag] if value is None else [flag, value]
    return out


def check_exclusive(args: list[str]) -> None:
    from common.cli import UserError

    if all(flag in args for flag in _EXCLUSIVE):
        raise UserError("give --steps or --epochs, not both.")


class _Bad(Exception):
    pass


class _ListParser(argparse.ArgumentParser):
    """Parses a list from a values file: errors become exceptions, not an exit."""

    def __init__(self, where: str) -> None:
        super().__init__(prog=where, add_help=False, allow_abbrev=False)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Bad(message)
