"""Evaluate checkpoints of one run or of every run in a sweep: once, or as they appear."""

from __future__ import annotations

import dataclasses
import logging
import time

from common import storage
from common.cli import UserError
from evaluator import leaderboard, metrics, summaries
from evaluator.evaluate import CheckpointUnreadable, Evaluator, RunSetup
from evaluator.ledger import Ledger
from evaluator.runs import Checkpoint, Run, discover_runs, expected_run_names, run_at

log = logging.getLogger("evaluator")


@dataclasses.dataclass
class Options:
    target: str  # a run dir or a sweep dir
    sweep: bool
    once: bool = False
    interval: float = 60.0
    timeout: float | None = None  # seconds without a new checkpoint before giving up
    batch_size: int = 32
    max_attempts: int = 3  # reads of an unreadable checkpoint before it is given up on


class Session:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.evaluator = Evaluator(options.batch_size)
        # Sweep-wide outputs sit in the sweep dir; a lone run keeps them in its eval dir.
        self.out_dir = options.target if options.sweep else storage.join(options.target, "eval")
        self.ledgers: dict[str, Ledger] = {}
        self.setups: dict[str, RunSetup] = {}
        self.attempts: dict[tuple[str, int], int] = {}
        self.best_export: dict | None = leaderboard.read(self.leaderboard_uri).get("best")

    @property
    def leaderboard_uri(self) -> str:
        return storage.join(self.out_dir, leaderboard.LEADERBOARD)

    # ------------------------------------------------------------ discovery

    def runs(self) -> list[Run]:
        if self.options.sweep:
            return discover_runs(self.options.target)
        run = run_at(self.options.target)
        return [run] if storage.exists(storage.join(run.uri, "hparams.json")) else []

    def ledger(self, run: Run) -> Ledger:
        if run.name not in self.ledgers:
            self.ledgers[run.name] = Ledger(run.eval_dir)
        return self.ledgers[run.name]

    def setup(self, run: Run) -> RunSetup:
        if run.name not in self.setups:
            self.setups[run.name] = RunSetup.of(run)
        return self.setups[run.name]

    def pending(self, run: Run) -> list[Checkpoint]:
        done = self.ledger(run).steps
        return [c for c in run.checkpoints() if c.step not in done]

    # ------------------------------------------------------------ one checkpoint

    def evaluate(self, run: Run, checkpoint: Checkpoint) -> bool:
        """Score and record one checkpoint; False if it could not be read (retried later)."""
        setup = self.setup(run)
        ledger = self.ledger(run)
        try:
            result, confusion = self.evaluator.score(setup, checkpoint)
        except CheckpointUnreadable as exc:
            return self._unreadable(run, checkpoint, str(exc))
        expected = setup.manifest.count("validation")
        if result["examples"] != expected:
            raise UserError(
                f"{run.name}: scored {result['examples']} validation examples but dataset.json "
                f"lists {expected}; the dataset at {setup.data_uri} changed under the run."
            )
        entry = {
            "step": checkpoint.step,
            "checkpoint": checkpoint.prefix,
            "time": time.time(),
            **result,
            "confusion": ledger.write_confusion(checkpoint.step, setup.manifest.labels, confusion),
        }
        ledger.record(entry)  # the result is kept before anything else can fail
        summaries.write(run.eval_dir, checkpoint.step, result, confusion)
        metrics.record(run.name, result, checkpoint.step, ledger.best())
        top5 = f"{result['top5']:.4f}" if result["top5"] is not None else "n/a"
        log.info(
            "%s step %d: top-1 %.4f, top-5 %s, loss %.4f over %d examples (%.1f s, %s images/s)",
            run.name,
            checkpoint.step,
            result["top1"],
            top5,
            result["loss"],
            result["examples"],
            result["seconds"],
            result["examples_per_sec"],
        )
        return True

    def _unreadable(self, run: Run, checkpoint: Checkpoint, reason: str) -> bool:
        key = (run.name, checkpoint.step)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        metrics.FAILURES.labels(run.name).inc()
        if self.attempts[key] < self.options.max_attempts:
            log.warning(
                "%s step %d: checkpoint unreadable (attempt %d of %d), will retry: %s",
                run.name,
                checkpoint.step,
                self.attempts[key],
                self.options.max_attempts,
                reason,
            )
            return False
        log.error("%s step %d: giving up on this checkpoint: %s", run.name, checkpoint.step, reason)
        self.ledger(run).record(
            {"step": checkpoint.step, "checkpoint": checkpoint.prefix, "error": reason}
        )
        return True

    # ------------------------------------------------------------ sweep-wide

    def refresh_leaderboard(self) -> dict:
        rows = leaderboard.rank([(r, self.ledger(r), r.hparams()) for r in self.runs()])
        if rows:
            top = rows[0]
            current = self.best_export or {}
            if (current.get("run"), current.get("step")) != (top["run"], top["best_step"]):
                self.best_export = self.export_best(top)
        return leaderboard.write(self.leaderboard_uri, rows, self.best_export)

    def export_best(self, row: dict) -> dict | None:
        """Export the sweep's best checkpoint now: the trainer may delete it later."""
        from common.export import export_model

        run = run_at(row["run_dir"])
        setup = self.setup(run)
        checkpoint = Checkpoint(row["best_step"], row["best_checkpoint"])
        try:
            model = self.evaluator.restore(setup, checkpoint)
        except CheckpointUnreadable as exc:
            log.warning("cannot export %s step %d: %s", run.name, checkpoint.step, exc)
            return self.best_export
        out = storage.join(self.out_dir, "best", str(int(time.time() * 1000)))
        export_model(model, setup.manifest.labels, setup.image_size, out)
        log.info(
            "best model: %s step %d (top-1 %.4f) exported to %s",
            run.name,
            checkpoint.step,
            row["best_top1"],
            out,
        )
        return {"run": run.name, "step": checkpoint.step, "top1": row["best_top1"], "export": out}

    def finished(self, runs: list[Run]) -> bool:
        """Every run (and every run sweep.json promises) complete, with nothing left to score."""
        names = {r.name for r in runs}
        if self.options.sweep and not expected_run_names(self.options.target) <= names:
            return False
        return bool(runs) and all(r.is_complete() and not self.pending(r) for r in runs)


# ---------------------------------------------------------------- entry points


def run_once(options: Options) -> dict:
    """Evaluate the latest checkpoint of each run (unless already done) and rank the runs."""
    session = Session(options)
    runs = session.runs()
    if not runs:
        raise UserError(f"no run found at {options.target} (no hparams.json).")
    evaluated_any = False
    for run in runs:
        checkpoints = run.checkpoints()
        if not checkpoints:
            log.warning("%s: no checkpoint yet", run.name)
            continue
        latest = checkpoints[-1]
        if latest.step in session.ledger(run).steps:
            log.info("%s step %d: already evaluated", run.name, latest.step)
        else:
            session.evaluate(run, latest)
        evaluated_any = True
    if not evaluated_any:
        raise UserError(f"no checkpoint to evaluate under {options.target}.")
    return session.refresh_leaderboard()


def watch(options: Options) -> tuple[dict, bool]:
    """Evaluate every new checkpoint once until all runs are done; (leaderboard, finished)."""
    session = Session(options)
    last_news = time.monotonic()
    board: dict | None = None
    while True:
        started = time.monotonic()
        runs = session.runs()
        progressed = False
        for run in runs:
            for checkpoint in session.pending(run):
                progressed |= session.evaluate(run, checkpoint)
        if progressed:
            last_news = time.monotonic()
        if progressed or board is None:
            board = session.refresh_leaderboard()
        if session.finished(runs):
            return board, True
        if options.timeout is not None and time.monotonic() - last_news > options.timeout:
            log.warning("no new checkpoint for %.0f s; stopping", options.timeout)
            return board, False
        time.sleep(max(0.0, options.interval - (time.monotonic() - started)))
