"""Early stops: the evaluator's stop.json, and a loss that is no longer a number.

A stopped run is finished, not interrupted: complete.json says why (`"stopped": {...}`), no
export is made (the evaluator exports the sweep's best, and a stopped run is never it), and
the process exits 0, so a Kubernetes Job succeeds and frees its GPU. A restarted trainer on a
stopped run finds complete.json and does nothing.

A NaN or infinite loss stops the run the same way, exit 0 too: it is not a crash worth a retry
(the same run from its last checkpoint diverges again, on a GPU that others are waiting for),
and not a user error of the sweep (a diverging learning rate is an answer a sweep is for).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

from common import layout, storage
from common.cli import UserError

log = logging.getLogger("trainer")

CHECK_EVERY_S = 5.0  # how often the background thread looks for stop.json


class StopFile:
    """Watches for runs/<run>/stop.json from a background thread, so that the training loop
    pays nothing for it (it reads an attribute); check_now() looks at once, at a checkpoint."""

    def __init__(self, run: layout.RunDir, every_s: float = CHECK_EVERY_S) -> None:
        self.run = run
        self.every_s = every_s
        self.request: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stop-file", daemon=True)

    def start(self) -> StopFile:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()

    def check_now(self) -> dict[str, Any] | None:
        """The stop request, if there is one now (one existence check until there is)."""
        if self.request is not None:
            return self.request
        try:
            if not storage.exists(self.run.stop_uri):
                return None
            request = self.run.stop_request()
        except UserError as exc:  # unreadable JSON still asks to stop
            request = {"reason": f"unreadable stop request ({exc})"}
        except Exception as exc:  # a network blip: look again next time
            log.warning("could not look for %s: %s", self.run.stop_uri, exc)
            return None
        self.request = request if isinstance(request, dict) else {"reason": "stop requested"}
        return self.request

    def _watch(self) -> None:
        while self.request is None and not self._stop.wait(self.every_s):
            self.check_now()


def from_request(request: dict[str, Any]) -> dict[str, Any]:
    """complete.json's `stopped` entry for a stop.json: the evaluator's verdict, or this
    run's own at a rung (trainer.rungs), which says so."""
    keep = ("by", "rule", "step", "reason", "requested")
    return {"by": "evaluator", **{k: request[k] for k in keep if k in request}}


def diverged(loss: float, step: int) -> dict[str, Any] | None:
    """complete.json's `stopped` entry when the loss is NaN or infinite; None when finite."""
    if math.isfinite(loss):
        return None
    return {
        "by": "trainer",
        "rule": "nan",
        "step": step,
        "reason": f"the loss is {loss} at step {step}",
    }


def save_complete(
    run: layout.RunDir, final_step: int, stopped: dict[str, Any], examples_per_sec: float | None
) -> None:
    """complete.json of a stopped run: its last checkpoint's step and why it stopped."""
    run.save_complete(
        {
            "final_step": final_step,
            "finished": layout.now(),
            "stopped": stopped,
            "examples_per_sec": examples_per_sec,
        }
    )
    log.info("run stopped early at step %d: %s", final_step, stopped.get("reason", "?"))
