"""What every command shares: logging set-up and turning a user's mistake into one sentence."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's input or environment: shown as one sentence, exit code 2."""


class RetryableError(Exception):
    """A failure that the same command may get past later: one sentence, exit code 1.

    A storage outage, or a full disk once space is freed. Exit 2 would tell a Kubernetes Job
    (podFailurePolicy) that no retry can help and fail it for good; 1 lets it retry, and the
    person reading the log still gets one sentence instead of a traceback.
    """


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first line, for a one-sentence message (its type when it has no text)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # Client libraries are chatty at INFO; their news is not the user's event log.
    for noisy in ("google", "urllib3", "absl", "tensorflow", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a command's main; a UserError becomes `error: ...` on stderr and exit code 2, a
    RetryableError the same line and exit code 1."""
    try:
        return main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RetryableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
