"""Evaluate checkpoints of one run or of every run in a sweep: once, or as they appear."""

from __future__ import annotations

import dataclasses
import logging
import time

from common import layout, storage
from common.cli import UserError, first_line
from common.layout import Checkpoint, RunDir, SweepDir
from common.lease import Lease
from evaluator import leaderboard
from evaluator.evaluate import CheckpointUnreadable, Evaluator, RunSetup
from evaluator.ledger import Ledger
from evaluator.metrics import EvalMetrics
from evaluator.summaries import EvalSummaries

log = logging.getLogger("evaluator")

BROKEN_RETRY_S = 300.0  # how often a broken run is looked at again


@dataclasses.dataclass
class Options:
    target: str  # a run dir or a sweep dir
    sweep: bool
    once: bool = False
    interval: float = 60.0
    timeout: float | None = None  # seconds without a new checkpoint before giving up
    batch_size: int = 32
    max_attempts: int = 3  # reads of an unreadable checkpoint before it is given up on
    keep_running: bool = False  # after every run is done, keep watching for runs added later
    metrics: EvalMetrics = dataclasses.field(default_factory=EvalMetrics)


class RunBroken(Exception):
    """A run's own files cannot be read: it is listed as broken, the other runs go on."""


class Session:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.evaluator = Evaluator(options.batch_size)
        self.metrics = options.metrics
        self.summaries = EvalSummaries()
        # Sweep-wide outputs sit in the sweep dir; a lone run keeps them in its eval dir.
        target = options.target
        self.out_dir = target if options.sweep else RunDir(target).eval_dir
        self.lease = Lease(storage.join(self.out_dir, layout.EVALUATOR_LEASE), role="evaluator")
        self.ledgers: dict[str, Ledger] = {}
        self.setups: dict[str, RunSetup] = {}
        self.attempts: dict[tuple[str, int], int] = {}
        self.broken: dict[str, str] = {}  # run name -> why it cannot be evaluated
        self.broken_at: dict[str, float] = {}  # when it was last found broken (monotonic)
        self.best_export: dict | None = None

    def start(self) -> None:
        """Take the lease (one evaluator per sweep), then tidy what a killed one left."""
        self.lease.acquire()
        self.best_export = leaderboard.read(self.leaderboard_uri).get("best")
        remove_partial_exports(storage.join(self.out_dir, layout.BEST))

    def close(self) -> None:
        self.summaries.close()
        self.lease.release()

    @property
    def leaderboard_uri(self) -> str:
        return storage.join(self.out_dir, layout.LEADERBOARD)

    # ------------------------------------------------------------ discovery

    def runs(self) -> list[RunDir]:
        if self.options.sweep:
            return SweepDir(self.options.target).runs()
        run = RunDir(self.options.target)
        return [run] if run.has_hparams() else []

    def expected_run_names(self) -> set[str]:
        """The runs sweep.json says were launched (empty without one, or when unreadable)."""
        if not self.options.sweep:
            return set()
        try:
            sweep = SweepDir(self.options.target).load()
        except UserError as exc:
            log.warning("ignoring %s", exc)
            return set()
        return set(sweep.run_names()) if sweep else set()

    def ledger(self, run: RunDir) -> Ledger:
        if run.name not in self.ledgers:
            self.ledgers[run.name] = Ledger(run.eval_dir)
        return self.ledgers[run.name]

    def setup(self, run: RunDir) -> RunSetup:
        if run.name not in self.setups:
            try:
                self.setups[run.name] = RunSetup.of(run)
            except (UserError, KeyError, TypeError, ValueError) as exc:
                reason = first_line(exc)
                if isinstance(exc, KeyError):
                    reason = f"{run.hparams_uri} lacks {reason}"
                raise RunBroken(reason) from exc
        return self.setups[run.name]

    def pending(self, run: RunDir) -> list[Checkpoint]:
        done = self.ledger(run).steps
        return [c for c in run.checkpoints() if c.step not in done]

    def mark_broken(self, run: RunDir, reason: str) -> None:
        if self.broken.get(run.name) != reason:
            log.error("%s cannot be evaluated: %s", run.name, reason)
        self.broken[run.name] = reason
        self.broken_at[run.name] = time.monotonic()
        self.setups.pop(run.name, None)  # read its files afresh when it is tried again

    # ------------------------------------------------------------ one checkpoint

    def evaluate(self, run: RunDir, checkpoint: Checkpoint) -> bool:
        """Score and record one checkpoint; False if it could not be read (retried later)."""
        setup = self.setup(run)
        ledger = self.ledger(run)
        try:
            result, confusion = self.evaluator.score(setup, checkpoint)
        except CheckpointUnreadable as exc:
            return self._unreadable(run, checkpoint, str(exc))
        except UserError as exc:  # its data is damaged: this run waits for a fix, others go on
            raise RunBroken(str(exc)) from exc
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
        if ledger.record(entry) is not entry:
            return True  # another evaluator was first; its events and metrics are its own
        self.summaries.write(run.eval_dir, checkpoint.step, result, confusion)
        self.metrics.record(run.name, result, checkpoint.step, ledger.best())
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

    def _unreadable(self, run: RunDir, checkpoint: Checkpoint, reason: str) -> bool:
        key = (run.name, checkpoint.step)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self.metrics.failures.labels(run.name).inc()
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
        ranked = []
        for run in self.runs():
            if run.name in self.broken:
                continue
            try:
                ranked.append((run, self.ledger(run), self.setup(run).hparams))
            except RunBroken as exc:
                self.mark_broken(run, str(exc))
        rows = leaderboard.rank(ranked)
        if rows:
            top = rows[0]
            current = self.best_export or {}
            if (current.get("run"), current.get("step")) != (top["run"], top["best_step"]):
                self.best_export = self.export_best(top)
        self.lease.check()
        return leaderboard.write(self.leaderboard_uri, rows, self.best_export, self.broken)

    def export_best(self, row: dict) -> dict | None:
        """Export the sweep's best checkpoint now: the trainer may delete it later."""
        from common.export import export_model

        run = RunDir(row["run_dir"])
        setup = self.setup(run)
        checkpoint = Checkpoint(row["best_step"], row["best_checkpoint"])
        try:
            model = self.evaluator.restore(setup, checkpoint)
        except CheckpointUnreadable as exc:
            log.warning("cannot export %s step %d: %s", run.name, checkpoint.step, exc)
            return self.best_export
        out = storage.join(self.out_dir, layout.BEST, str(int(time.time() * 1000)))
        self.lease.check()
        export_model(model, setup.manifest.labels, setup.image_size, out)
        log.info(
            "best model: %s step %d (top-1 %.4f) exported to %s",
            run.name,
            checkpoint.step,
            row["best_top1"],
            out,
        )
        return {"run": run.name, "step": checkpoint.step, "top1": row["best_top1"], "export": out}

    def finished(self, runs: list[RunDir]) -> bool:
        """Every run (and every run sweep.json promises) complete, with nothing left to score.

        A broken run counts as done: nothing more can be learnt from it until someone fixes it.
        """
        if not self.expected_run_names() <= {r.name for r in runs}:
            return False
        return bool(runs) and all(
            r.name in self.broken or (r.is_complete() and not self.pending(r)) for r in runs
        )

    def round(self, runs: list[RunDir]) -> bool:
        """Score every pending checkpoint once; True if anything new was recorded."""
        progressed = False
        for run in runs:
            since = time.monotonic() - self.broken_at.get(run.name, -BROKEN_RETRY_S)
            if run.name in self.broken and since < BROKEN_RETRY_S:
                continue  # a fix takes a person; looking again every round would cost a pass
            try:
                self.setup(run)
                for checkpoint in self.pending(run):
                    progressed |= self.evaluate(run, checkpoint)
            except RunBroken as exc:
                self.mark_broken(run, str(exc))
            else:
                self.broken.pop(run.name, None)
        return progressed


def remove_partial_exports(best_dir: str) -> None:
    """Exports a killed evaluator left half-written (no labels.txt, which is written last)."""
    from common.export import is_complete_export

    for version in storage.list_dirs(best_dir):
        if not is_complete_export(version):
            import tensorflow as tf

            tf.io.gfile.rmtree(version)
            log.info("removed the incomplete export %s left by a stopped evaluator", version)


# ---------------------------------------------------------------- entry points


def run_once(options: Options) -> dict:
    """Evaluate the latest checkpoint of each run (unless already done) and rank the runs.

    Raises UserError after writing the leaderboard when a run's latest checkpoint could not
    be scored: --once promised a verdict on it.
    """
    session = Session(options)
    runs = session.runs()
    if not runs:
        raise UserError(f"no run found at {options.target} (no hparams.json).")
    session.start()
    try:
        unscored = [f"{run.name} ({why})" for run in runs if (why := _score_latest(session, run))]
        board = session.refresh_leaderboard()
        if not unscored and not any(
            session.ledger(r).entries for r in runs if r.name not in session.broken
        ):
            raise UserError(f"no checkpoint to evaluate under {options.target}.")
    finally:
        session.close()
    if unscored:
        raise UserError(f"could not evaluate the latest checkpoint of {'; '.join(unscored)}.")
    return board


def _score_latest(session: Session, run: RunDir) -> str | None:
    """Score a run's latest checkpoint; None on success, else why it was not scored."""
    try:
        session.setup(run)
        checkpoints = run.checkpoints()
        if not checkpoints:
            log.warning("%s: no checkpoint yet", run.name)
            return None
        latest = checkpoints[-1]
        if latest.step in session.ledger(run).steps:
            entry = next(e for e in session.ledger(run).entries if e["step"] == latest.step)
            log.info("%s step %d: already evaluated", run.name, latest.step)
            return f"step {latest.step}: {entry['error']}" if "error" in entry else None
        while not session.evaluate(run, latest):
            time.sleep(1.0)  # retried a few times, then recorded as an error
        entry = next(e for e in session.ledger(run).entries if e["step"] == latest.step)
        return f"step {latest.step} is unreadable: {entry['error']}" if "error" in entry else None
    except RunBroken as exc:
        session.mark_broken(run, str(exc))
        return str(exc)


def watch(options: Options) -> tuple[dict, bool]:
    """Evaluate every new checkpoint once until all runs are done; (leaderboard, finished).

    With keep_running it never returns: done, it keeps serving metrics and scores runs that
    are added later (a refined sweep launched into the same directory).
    """
    session = Session(options)
    session.start()
    try:
        return _watch(session, options)
    finally:
        session.close()


def _watch(session: Session, options: Options) -> tuple[dict, bool]:
    last_news = time.monotonic()
    board: dict | None = None
    idle_said = False
    while True:
        started = time.monotonic()
        runs = session.runs()
        progressed = session.round(runs)
        if progressed:
            last_news, idle_said = time.monotonic(), False
        if progressed or board is None:
            board = session.refresh_leaderboard()
        if session.finished(runs):
            if not options.keep_running:
                return board, True
            if not idle_said:
                log.info("every run is done; watching for runs added later")
                idle_said = True
        elif options.timeout is not None and time.monotonic() - last_news > options.timeout:
            log.warning("no new checkpoint for %.0f s; stopping", options.timeout)
            return board, False
        time.sleep(max(0.0, options.interval - (time.monotonic() - started)))
