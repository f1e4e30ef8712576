"""Early-stopping rules: which running runs of a sweep to stop, from their score histories.

Pure functions of the evaluator's scores (top-1 by step), so a restarted evaluator, or a test,
reaches the same verdicts from the same histories. Each verdict carries the figures it
compared and a one-line reason; the evaluator writes it to the run's stop.json.

- `none`: never stop.
- `median` (Katib's median stop): stop a run whose best top-1 by its latest evaluated step S is
  below the median of the other runs' running averages (mean top-1 of their evaluations up to
  S). Only runs that reached S, or are done, count as others, and at least MEDIAN_MIN_OTHERS.
- `asha` (asynchronous successive halving, as Ray Tune's): rungs at steps r, r*eta,
  r*eta^2, ... below the runs' last step (r = the grace period). A run is judged at the highest
  rung it reached, by its best top-1 up to its first evaluation at or past the rung, against
  every run that reached that rung so far (stopped and complete ones included): it goes on
  only while it is in the top ceil(n / eta) of those n runs.

For both: the current best run (every run tied for the highest top-1 so far) is never stopped,
nor is a run before the grace period (its latest evaluation is before step `grace`). Ties go to
the run: it is stopped only when strictly worse.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

from common.layout import EarlyStop

Point = tuple[int, float]  # (step, top-1), a history sorted by step
MEDIAN_MIN_OTHERS = 2  # a median of fewer runs says too little to stop anyone
DEFAULT_GRACE_FRACTION = 0.1  # grace when sweep.json gives none: a tenth of the runs' steps


@dataclasses.dataclass(frozen=True)
class Stop:
    """A verdict: stop `run`, judged at its evaluation of `step`."""

    run: str
    rule: str
    step: int
    reason: str
    figures: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """stop.json's content (the time is added by whoever writes it)."""
        return {"rule": self.rule, "step": self.step, "reason": self.reason, **self.figures}


def grace_steps(rule: EarlyStop, total_steps: int | None) -> int | None:
    """The grace period in steps; None when it cannot be known yet (no run's length known)."""
    if rule.grace is not None:
        return rule.grace
    if not total_steps:
        return None
    return max(1, math.ceil(total_steps * DEFAULT_GRACE_FRACTION))


def decide(
    rule: EarlyStop,
    histories: dict[str, list[Point]],
    running: set[str],
    total_steps: int | None,
) -> list[Stop]:
    """The runs of `running` to stop now, by name order.

    histories: every run that counts (running, complete, stopped), its scored evaluations
    sorted by step. running: those that may still be stopped. total_steps: the runs' last step.
    """
    grace = grace_steps(rule, total_steps)
    if rule.rule == "none" or grace is None:
        return []
    protected = leaders(histories)
    judged = sorted(
        run
        for run in running
        if run not in protected and histories.get(run) and histories[run][-1][0] >= grace
    )
    if rule.rule == "median":
        verdicts = (_median(run, histories, running) for run in judged)
    else:
        rungs = rung_steps(grace, rule.eta, total_steps, histories)
        verdicts = (_asha(run, histories, rungs, rule.eta) for run in judged)
    return [stop for stop in verdicts if stop is not None]


def leaders(histories: dict[str, list[Point]]) -> set[str]:
    """The runs whose best top-1 is the highest of all (several on a tie)."""
    bests = {run: max(t for _, t in points) for run, points in histories.items() if points}
    if not bests:
        return set()
    top = max(bests.values())
    return {run for run, best in bests.items() if best == top}


def best_by(points: list[Point], step: int) -> float | None:
    """The best top-1 among evaluations at or before `step`."""
    values = [t for s, t in points if s <= step]
    return max(values) if values else None


def running_average(points: list[Point], step: int) -> float | None:
    """The mean top-1 of the evaluations at or before `step`."""
    values = [t for s, t in points if s <= step]
    return sum(values) / len(values) if values else None


def rung_steps(
    grace: int, eta: int, total_steps: int | None, histories: dict[str, list[Point]]
) -> list[int]:
    """grace, grace*eta, grace*eta^2, ... below the runs' last step (or the furthest seen)."""
    end = total_steps or max((p[-1][0] + 1 for p in histories.values() if p), default=0)
    rungs, rung = [], grace
    while rung < end:
        rungs.append(rung)
        rung *= eta
    return rungs


def rung_value(points: list[Point], rung: int) -> float | None:
    """A run's figure at a rung: its best top-1 up to its first evaluation at or past the rung;
    None if it has not reached the rung."""
    reached = next((s for s, _ in points if s >= rung), None)
    return None if reached is None else best_by(points, reached)


def _median(run: str, histories: dict[str, list[Point]], running: set[str]) -> Stop | None:
    points = histories[run]
    step = points[-1][0]
    mine = best_by(points, step)
    others = {}
    for other, theirs in histories.items():
        if other == run or not theirs:
            continue
        if theirs[-1][0] < step and other in running:
            continue  # still on its way to this step: its average would compare less training
        average = running_average(theirs, step)
        if average is not None:
            others[other] = average
    if mine is None or len(others) < MEDIAN_MIN_OTHERS:
        return None
    median = statistics.median(others.values())
    if mine >= median:
        return None
    reason = (
        f"best top-1 {mine:.4f} by step {step} is below the median {median:.4f} of "
        f"{len(others)} other runs' running averages at that step"
    )
    figures = {"best_top1": mine, "median": median, "running_averages": others}
    return Stop(run, "median", step, reason, figures)


def _asha(run: str, histories: dict[str, list[Point]], rungs: list[int], eta: int) -> Stop | None:
    points = histories[run]
    step = points[-1][0]
    reached = [rung for rung in rungs if rung <= step]
    if not reached:
        return None
    rung = reached[-1]
    at_rung = {
        other: value
        for other, theirs in histories.items()
        if (value := rung_value(theirs, rung)) is not None
    }
    mine = at_rung[run]
    keep = math.ceil(len(at_rung) / eta)
    better = sum(1 for value in at_rung.values() if value > mine)
    if better < keep:
        return None
    cutoff = sorted(at_rung.values(), reverse=True)[keep - 1]
    reason = (
        f"top-1 {mine:.4f} at the rung of step {rung} ranks {better + 1} of {len(at_rung)} "
        f"runs there; asha keeps the top {keep} (1/{eta}, at least {cutoff:.4f})"
    )
    figures = {"rung": rung, "top1": mine, "cutoff": cutoff, "keep": keep, "at_rung": at_rung}
    return Stop(run, "asha", step, reason, figures)
