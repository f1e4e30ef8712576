"""Show how far a run is: a bar with images/s and ETA on a terminal, plain lines otherwise."""

from __future__ import annotations

import logging
import multiprocessing
import sys
import time
from typing import TextIO

log = logging.getLogger("preprocess")

LINE_INTERVAL_S = 10.0  # plain lines (logs, CI): one every so often, not a flood
BAR_INTERVAL_S = 0.2
_BAR_WIDTH = 30


class SharedCounter:
    """Images done, counted by every worker process (created before the pool starts)."""

    def __init__(self, context: multiprocessing.context.BaseContext | None = None) -> None:
        self._value = (context or multiprocessing).Value("q", 0)

    def add(self, n: int) -> None:
        with self._value.get_lock():
            self._value.value += n

    @property
    def value(self) -> int:
        return self._value.value


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.is_tty = self.stream.isatty()
        self.start = time.monotonic()
        # On a terminal the bar shows at once; plain lines wait for the first interval.
        self._last_shown = self.start - (BAR_INTERVAL_S if self.is_tty else 0.0)
        self._shown_bar = False

    @property
    def interval_s(self) -> float:
        return BAR_INTERVAL_S if self.is_tty else LINE_INTERVAL_S

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self._last_shown < self.interval_s:
            return
        self._last_shown = now
        if self.is_tty:
            self.stream.write("\r" + self._bar(done, now - self.start))
            self.stream.flush()
            self._shown_bar = True
        else:
            log.info("progress: %s", self._figures(done, now - self.start))

    def close(self) -> None:
        if self._shown_bar:
            self.stream.write("\r" + " " * (_BAR_WIDTH + 60) + "\r")
            self.stream.flush()

    def _bar(self, done: int, elapsed: float) -> str:
        filled = int(_BAR_WIDTH * done / self.total) if self.total else _BAR_WIDTH
        return f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {self._figures(done, elapsed)}"

    def _figures(self, done: int, elapsed: float) -> str:
        rate = done / elapsed if elapsed > 0 else 0.0
        left = self.total - done
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        percent = 100 * done / self.total if self.total else 100
        return f"{done}/{self.total} images ({percent:.0f}%), {rate:.0f} images/s, ETA {eta}"
