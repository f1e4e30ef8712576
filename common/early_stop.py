"""Early-stopping rules: which running runs of a sweep to stop, from their recorded results.

Pure functions of the runs' results (top-1 and validation loss by step, common.results), so
that a trainer judging itself at a rung, the evaluator judging an older sweep's runs, a
restarted one, or a test, all reach the same verdict from the same results.

- `none`: never stop.
- `median` (Katib's median stop): stop a run whose best top-1 by its latest evaluated step S is
  below the median of the other runs' running averages (mean top-1 of their evaluations up to
  S). Only runs that reached S, or are done, count as others, and at least MEDIAN_MIN_OTHERS.
- `asha` (asynchronous successive halving, as Ray Tune's): rungs at steps r, r*eta,
  r*eta^2, ... below the runs' last step (r = the grace period). A run is judged at the highest
  rung it reached, by its best result up to its first evaluation at or past the rung, against
  every run that reached that rung so far (stopped and complete ones included): it goes on
  only while it is in the top ceil(n / eta) of those n runs.

Results are compared by top-1, then by validation loss: with a small validation split many
runs share a top-1, and the lower loss is the better run (a result without a loss, from an
older evaluator, loses such a tie). Only an exact tie of both goes to the run.

For both rules: the current best run (the best result so far, by the same order) is never
stopped by the rule, nor is a run before the grace period (its latest evaluation is before step
`grace`).

With `patience` (steps), a run whose best result is that many steps older than its latest
evaluation is stopped as well, the best run included (Keras' EarlyStopping, in steps): with a
small validation split a run often peaks early and then only drifts, and asha alone trains the
best run to its end whatever it does. Stopping loses nothing: the run's best checkpoint stays
scored, ranked and exportable.
A run whose training loss at a rung (which its trainer records with the result) is beyond
ABSURD_LOSS is stopped at its first judged evaluation whatever the others did, the best run
included: the loss is finite but the run has diverged. The validation loss is no such sign:
from random weights it is in the billions for the first hundred steps or so, while batch
normalisation's moving averages catch up, in runs that go on to learn.

Where a trainer scores itself (rung_schedule): asha's rungs; for median every `grace` steps.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable
from typing import Any, NamedTuple

from common.layout import EarlyStop

MEDIAN_MIN_OTHERS = 2  # a median of fewer runs says too little to stop anyone
DEFAULT_GRACE_FRACTION = 0.1  # grace when sweep.json gives none: a tenth of the runs' steps
# Training loss (cross-entropy plus the weight penalty) beyond which a run has diverged: a
# model no better than chance scores ln(classes) (6.9 for 1,000), one confidently wrong on
# every image tens, ImageNet Inception-v3's weight penalty is about 1; 1,000 means exploding
# weights or logits thousands apart, which no training that still learns produces.
ABSURD_LOSS = 1000.0


class Score(NamedTuple):
    """One recorded result: step, top-1, validation loss and, for a result its trainer
    recorded at a rung, the training loss there (None when not recorded)."""

    step: int
    top1: float
    loss: float | None = None
    train_loss: float | None = None

    @property
    def key(self) -> tuple[float, float]:
        """The order of results: higher top-1, then lower loss (an unknown or NaN loss is
        worst). Early stopping, the evaluator's best checkpoint of a run and the leaderboard's
        ranking all use it, so they never disagree on which result is best."""
        known = self.loss is not None and not math.isnan(self.loss)
        return (self.top1, -(self.loss if known else math.inf))

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Score:
        """A scored results-store entry (common.results) as a Score; a loss that is not a
        number is unknown."""
        loss, train_loss = (entry.get(k) if _is_number(entry.get(k)) else None
                            for k in ("loss", "train_loss"))  # fmt: skip
        return cls(entry["step"], entry["top1"], loss, train_loss)


Point = Score  # the older name, (step, top-1), still accepted everywhere


def scores_of(entries: Iterable[dict[str, Any]]) -> list[Score]:
    """A results store's scored entries (common.results) as a history sorted by step."""
    return sorted(Score.of(e) for e in entries if isinstance(e.get("top1"), (int, float)))


@dataclasses.dataclass(frozen=True)
class Stop:
    """A verdict: stop `run`, judged at its evaluation of `step`."""

    run: str
    rule: str
    step: int
    reason: str
    figures: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """stop.json's content (the time and who judged are added by whoever writes it)."""
        return {"rule": self.rule, "step": self.step, "reason": self.reason, **self.figures}


def grace_steps(rule: EarlyStop, total_steps: int | None) -> int | None:
    """The grace period in steps; None when it cannot be known yet (no run's length known)."""
    if rule.grace is not None:
        return rule.grace
    if not total_steps:
        return None
    return max(1, math.ceil(total_steps * DEFAULT_GRACE_FRACTION))


def rung_schedule(rule: EarlyStop, total_steps: int) -> list[int]:
    """The steps at which a run of `total_steps` is judged by a trainer that scores itself:
    asha's rungs; for median every grace steps; none for `none` (all before the last step,
    where judging would save nothing)."""
    grace = grace_steps(rule, total_steps)
    if rule.rule == "none" or grace is None:
        return []
    if rule.rule == "asha":
        return rung_steps(grace, rule.eta, total_steps, {})
    return list(range(grace, total_steps, grace))


def decide(
    rule: EarlyStop,
    histories: dict[str, list[Score]],
    running: set[str],
    total_steps: int | None,
    judge: set[str] | None = None,
) -> list[Stop]:
    """The runs to stop now, by name order.

    histories: every run that counts (running, complete, stopped), its scored evaluations
    sorted by step, as Score or (step, top-1) tuples. running: the runs still training (a
    median compares only with those that reached the step, or are done). judge: the runs that
    may be stopped now, by default every running one. total_steps: the runs' last step.
    """
    histories = {run: [Score(*p) for p in points] for run, points in histories.items()}
    grace = grace_steps(rule, total_steps)
    if rule.rule == "none" or grace is None:
        return []
    candidates = sorted(
        run
        for run in (running if judge is None else judge & running)
        if histories.get(run) and histories[run][-1].step >= grace
    )
    absurd = [stop for run in candidates if (stop := _absurd(run, rule, histories[run]))]
    done = {stop.run for stop in absurd}
    stale = [stop for run in candidates if run not in done
             and (stop := _plateau(run, rule, histories[run]))]  # fmt: skip
    protected = leaders(histories) | done | {stop.run for stop in stale}
    judged = [run for run in candidates if run not in protected]
    if rule.rule == "median":
        verdicts = (_median(run, histories, running) for run in judged)
    else:
        rungs = rung_steps(grace, rule.eta, total_steps, histories)
        verdicts = (_asha(run, histories, rungs, rule.eta) for run in judged)
    ruled = (s for s in verdicts if s is not None)
    return sorted([*absurd, *stale, *ruled], key=lambda s: s.run)


def leaders(histories: dict[str, list[Score]]) -> set[str]:
    """The runs whose best result is the best of all (several only on an exact tie)."""
    bests = {run: max(p.key for p in points) for run, points in histories.items() if points}
    if not bests:
        return set()
    top = max(bests.values())
    return {run for run, best in bests.items() if best == top}


def best_by(points: list[Score], step: int) -> Score | None:
    """The best result among evaluations at or before `step`."""
    values = [p for p in points if p.step <= step]
    return max(values, key=lambda p: p.key) if values else None


def running_average(points: list[Score], step: int, field: str = "top1") -> float | None:
    """The mean top-1 (or loss) of the evaluations at or before `step` that have it."""
    values = [getattr(p, field) for p in points if p.step <= step]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def rung_steps(
    grace: int, eta: int, total_steps: int | None, histories: dict[str, list[Score]]
) -> list[int]:
    """grace, grace*eta, grace*eta^2, ... below the runs' last step (or the furthest seen)."""
    end = total_steps or max((p[-1][0] + 1 for p in histories.values() if p), default=0)
    rungs, rung = [], grace
    while rung < end:
        rungs.append(rung)
        rung *= eta
    return rungs


def rung_score(points: list[Score], rung: int) -> Score | None:
    """A run's result at a rung: its best up to its first evaluation at or past the rung;
    None if it has not reached the rung."""
    points = [Score(*p) for p in points]
    reached = next((p.step for p in points if p.step >= rung), None)
    return None if reached is None else best_by(points, reached)


def rung_value(points: list[Score], rung: int) -> float | None:
    """rung_score's top-1."""
    score = rung_score(points, rung)
    return None if score is None else score.top1


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _loss_text(loss: float | None) -> str:
    return "unknown" if loss is None else f"{loss:.4g}"


def _absurd(run: str, rule: EarlyStop, points: list[Score]) -> Stop | None:
    latest = points[-1]
    if latest.train_loss is None or latest.train_loss <= ABSURD_LOSS:
        return None
    reason = (
        f"training loss {latest.train_loss:.3g} at step {latest.step} is finite but beyond "
        f"{ABSURD_LOSS:g} (validation top-1 {latest.top1:.4f}): the run has diverged"
    )
    figures = {"top1": latest.top1, "loss": latest.loss, "train_loss": latest.train_loss,
               "absurd_loss": ABSURD_LOSS}  # fmt: skip
    return Stop(run, rule.rule, latest.step, reason, figures)


def _plateau(run: str, rule: EarlyStop, points: list[Score]) -> Stop | None:
    if not rule.patience:
        return None
    best = max(points, key=lambda p: p.key)  # the earliest of equal results
    latest = points[-1].step
    if latest - best.step < rule.patience:
        return None
    reason = (
        f"its best top-1 {best.top1:.4f} (loss {_loss_text(best.loss)}) at step {best.step} "
        f"has not improved in the {latest - best.step} steps to step {latest} (patience "
        f"{rule.patience} steps)"
    )
    figures = {"best_top1": best.top1, "best_loss": best.loss, "best_step": best.step,
               "patience": rule.patience}  # fmt: skip
    return Stop(run, rule.rule, latest, reason, figures)


def _median(run: str, histories: dict[str, list[Score]], running: set[str]) -> Stop | None:
    points = histories[run]
    step = points[-1].step
    mine = best_by(points, step)
    others, losses = {}, {}
    for other, theirs in histories.items():
        if other == run or not theirs:
            continue
        if theirs[-1].step < step and other in running:
            continue  # still on its way to this step: its average would compare less training
        average = running_average(theirs, step)
        if average is not None:
            others[other] = average
            losses[other] = running_average(theirs, step, "loss")
    if mine is None or len(others) < MEDIAN_MIN_OTHERS:
        return None
    median = statistics.median(others.values())
    known = [loss for loss in losses.values() if loss is not None]
    median_loss = statistics.median(known) if known else None
    if mine.top1 > median:
        return None
    if mine.top1 == median:  # a tie: the loss decides; unknown on either side goes on
        if mine.loss is None or median_loss is None or mine.loss <= median_loss:
            return None
        reason = (
            f"best top-1 {mine.top1:.4f} by step {step} equals the median of {len(others)} "
            f"other runs' running averages, and its loss {mine.loss:.4g} is above their "
            f"median loss {median_loss:.4g}"
        )
    else:
        reason = (
            f"best top-1 {mine.top1:.4f} by step {step} is below the median {median:.4f} of "
            f"{len(others)} other runs' running averages at that step"
        )
    figures = {
        "best_top1": mine.top1, "best_loss": mine.loss, "median": median,
        "median_loss": median_loss, "running_averages": others,
    }  # fmt: skip
    return Stop(run, "median", step, reason, figures)


def _asha(run: str, histories: dict[str, list[Score]], rungs: list[int], eta: int) -> Stop | None:
    points = histories[run]
    step = points[-1].step
    reached = [rung for rung in rungs if rung <= step]
    if not reached:
        return None
    rung = reached[-1]
    at_rung = {
        other: score
        for other, theirs in histories.items()
        if (score := rung_score(theirs, rung)) is not None
    }
    mine = at_rung[run]
    keep = math.ceil(len(at_rung) / eta)
    better = sum(1 for score in at_rung.values() if score.key > mine.key)
    if better < keep:
        return None
    cutoff = sorted(at_rung.values(), key=lambda s: s.key, reverse=True)[keep - 1]
    tie = cutoff.top1 == mine.top1
    reason = (
        f"top-1 {mine.top1:.4f} at the rung of step {rung} ranks {better + 1} of {len(at_rung)} "
        f"runs there; asha keeps the top {keep} (1/{eta}, at least {cutoff.top1:.4f}"
        + (f"; tied on top-1, its loss {_loss_text(mine.loss)} is above the cutoff's "
           f"{_loss_text(cutoff.loss)})" if tie else ")")
    )  # fmt: skip
    figures = {
        "rung": rung, "top1": mine.top1, "loss": mine.loss, "cutoff": cutoff.top1,
        "cutoff_loss": cutoff.loss, "keep": keep,
        "at_rung": {name: score.top1 for name, score in at_rung.items()},
        "at_rung_loss": {name: score.loss for name, score in at_rung.items()},
    }  # fmt: skip
    return Stop(run, "asha", step, reason, figures)
