"""Stop requests: SIGTERM (Kubernetes eviction or preemption) and SIGINT (Ctrl-C).

The handler only raises a flag; the training loop sees it after the current step, saves a
checkpoint and exits, well within a pod's grace period.
"""

from __future__ import annotations

import logging
import signal
import types

log = logging.getLogger("trainer")

# SIGTERM is the orchestrator's normal way to stop a process: saving and leaving is success.
# A Kubernetes Job must not see it so: a pod that exits 0 is a completion, and an evicted
# trainer would mark its Job done with the run unfinished. Jobs pass --exit-code-on-stop 143.
EXIT_CODES = {signal.SIGTERM: 0, signal.SIGINT: 130}


class StopRequest:
    def __init__(self, sigterm_exit_code: int = 0) -> None:
        self.signal: signal.Signals | None = None
        self.codes = {**EXIT_CODES, signal.SIGTERM: sigterm_exit_code}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        return self.codes.get(self.signal, 0) if self.signal else 0

    def install(self) -> StopRequest:
        for sig in EXIT_CODES:
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum)
            log.info("%s received: stopping after this step", self.signal.name)
