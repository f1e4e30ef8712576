"""SIGTERM for the evaluator: finish the current write, release the lease, exit 0.

Kubernetes stops the evaluator's pod with SIGTERM on every rollout, scale-down or drain
(a Deployment with `Recreate`: the new pod waits for this one). Python's default for SIGTERM
ends the process at once, in the middle of whatever it writes: a best/ export cut short, a
lease left to expire while the new pod waits out its ttl. The handler here only raises a
flag; the watch loop sees it between checkpoints and in its sleep, so each write in progress
(a score, a stop.json, the leaderboard, an export) completes first, then the lease is released
and the process exits 0: being stopped is the orchestrator's normal way, not a failure.

SIGINT (Ctrl-C, and the local launcher's stop) keeps Python's KeyboardInterrupt: a person or
a launcher that asks for a stop there wants it now, and every write here is atomic or, for
an export, cleaned up by the next evaluator.
"""

from __future__ import annotations

import logging
import signal
import threading
import types

log = logging.getLogger("evaluator")


class Shutdown:
    """A stop request raised by SIGTERM; wait() is a sleep that a stop request ends early."""

    def __init__(self) -> None:
        self._event = threading.Event()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def install(self) -> Shutdown:
        """Handle SIGTERM from now on (call from the main thread)."""
        signal.signal(signal.SIGTERM, self._handle)
        return self

    def request(self) -> None:
        self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to seconds; True at once when a stop is requested."""
        return self._event.wait(max(0.0, seconds))

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if not self.requested:
            log.info("SIGTERM received: stopping after the current write")
        self.request()
