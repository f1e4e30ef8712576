"""Rung checkpoints: in a sweep with an early-stopping rule, the trainer judges itself.

Why: a verdict only saves GPU time if it arrives before the run passes the rung. A GPU trainer
reaches a rung in seconds while the one CPU evaluator may need a minute per checkpoint per
run, so verdicts from the evaluator come late or never on short runs. Katib and Ray Tune have
a trial report its own metric; here the trainer does the same, without giving up the
evaluator's exactly-once results:

- The rungs are the rule's (common.early_stop.rung_schedule, from sweep.json and the run's
  steps). hparams.json lists them as `rungs`, before the first step, so that the evaluator
  leaves these checkpoints to the trainer while it trains (and scores any the trainer left,
  once the run is done).
- At a rung the loop saves a checkpoint; the chief then scores the validation split with the
  training model on its own device, with the evaluator's code (common.validation), and
  records it as that checkpoint's result in the run's create-only store (common.results),
  saying it scored it and at which precision. A result already there (the evaluator's, or
  this trainer's before a restart) stands and is used as it is: one result per checkpoint.
- It reads every run's results, and applies the rule to itself (common.early_stop.decide, the
  evaluator's implementation): asynchronous successive halving compares with the runs that
  reached this rung so far. A verdict becomes stop.json, written once, as an evaluator's is.
- A run that went on before every run of the sweep had reached its rung is judged again, on
  the same results, at each later checkpoint, until all have or it is stopped. Why: with the
  runs training side by side, the order they reach a rung in is chance (measured: the same
  sweep saved 50% of its steps or 38% by that order alone), and a run that went on only
  because it came first would train to the next rung. This reads every run's results once per
  checkpoint: one listing per run.
- With a patience (common.early_stop), the run is judged at every checkpoint, on the results
  on record by then (the evaluator scores the checkpoints between rungs): a run whose best is
  `patience` steps old stops itself without waiting for a rung.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from common import early_stop, layout, results, storage
from common.cli import UserError
from common.layout import EarlyStop, RunDir

log = logging.getLogger("trainer")


@dataclasses.dataclass
class Rungs:
    """The rung steps of one run, and the rule that judges it there."""

    rule: EarlyStop
    steps: list[int]
    sweep: layout.SweepDir
    total_steps: int
    reached: int = 0  # at the last verdict: the runs with a result at or past its step
    settled: set[int] = dataclasses.field(default_factory=set)  # rungs every run had reached

    @classmethod
    def of(cls, run: RunDir, total_steps: int, has_validation: bool) -> Rungs | None:
        """The run's rungs when it is a candidate of a sweep with a rule; None otherwise.

        An unreadable sweep.json is a warning, not a failure: the run trains to the end, as a
        run without a rule does.
        """
        sweep_dir = run.sweep()
        if sweep_dir is None:
            return None
        try:
            sweep = sweep_dir.load()
        except UserError as exc:
            log.warning("warning: no early stopping at rungs: %s", exc)
            return None
        if sweep is None or run.name not in sweep.run_names() or sweep.early_stop.rule == "none":
            return None
        if not has_validation:
            log.warning("warning: no early stopping at rungs: the dataset has no validation split")
            return None
        steps = early_stop.rung_schedule(sweep.early_stop, total_steps)
        return cls(sweep.early_stop, steps, sweep_dir, total_steps) if steps else None

    def due(self, step: int) -> bool:
        return step in self.steps

    def open_rung(self, step: int) -> int | None:
        """The last rung at or before `step` if a verdict there may still change: not every run
        of the sweep had reached it when this run was last judged there (or not judged yet by
        this process, after a restart)."""
        passed = [rung for rung in self.steps if rung <= step]
        return passed[-1] if passed and passed[-1] not in self.settled else None

    def describe(self) -> str:
        return f"{self.rule.describe()}: this run scores and judges itself at steps " + ", ".join(
            str(s) for s in self.steps
        )

    def histories(self) -> tuple[dict[str, list[early_stop.Score]], set[str]]:
        """Every run's recorded results, and the runs still training (no complete.json, no
        stop.json)."""
        histories, running = {}, set()
        for other in self.sweep.runs():
            histories[other.name] = early_stop.scores_of(results.read_all(other.eval_dir))
            if not other.is_complete() and not storage.exists(other.stop_uri):
                running.add(other.name)
        return histories, running

    def judge(
        self, run: RunDir, step: int, train_loss: float | None = None
    ) -> early_stop.Stop | None:
        """The rule's verdict on this run at `step`, from every run's recorded results (and
        this process's training loss there, when the result on record lacks it)."""
        histories, running = self.histories()
        running.add(run.name)  # this process is training it
        mine = histories.get(run.name) or []
        if train_loss is not None and mine and mine[-1].step == step:
            mine[-1] = mine[-1]._replace(train_loss=mine[-1].train_loss or train_loss)
        verdicts = early_stop.decide(
            self.rule, histories, running, self.total_steps, judge={run.name}
        )
        self.reached = sum(1 for points in histories.values() if points and points[-1].step >= step)
        if self.reached >= len(histories):
            self.settled.add(step)
        return verdicts[0] if verdicts else None


def record_result(
    run: RunDir,
    step: int,
    checkpoint: str,
    score: Any,  # () -> (result, confusion); called only when no result is on record
    labels: list[str],
    precision: str,
    train_loss: float | None,
) -> tuple[dict[str, Any], bool]:
    """The rung checkpoint's result: scored now unless one is on record; (entry, ours).
    Ours carries the training loss at the step too (for common.early_stop's absurd check)."""
    existing = {e["step"]: e for e in results.read_store(run.eval_dir)}.get(step)
    if existing is not None:
        return existing, False
    result, confusion = score()
    confusion_uri = results.write_confusion(run.eval_dir, step, labels, confusion)
    entry = results.entry(step, checkpoint, result, confusion_uri, "trainer", precision,
                          time.time())  # fmt: skip
    if train_loss is not None:
        entry["train_loss"] = train_loss
    return results.record(run.eval_dir, entry)


def stop_record(verdict: early_stop.Stop) -> dict[str, Any]:
    """stop.json's content for the trainer's own verdict."""
    return {**verdict.record(), "by": "trainer", "requested": layout.now()}
