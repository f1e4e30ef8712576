"""Evaluate checkpoints of one run or of every run in a sweep: once, or as they appear.

Keeping up: checkpoints may arrive faster than one CPU scores them. Each round scores one
checkpoint per run, round robin: the newest unscored one of each run that has news (a
checkpoint newer than its newest score), so that the leaderboard and the early-stopping rule
see the present; only when no run has news does it catch up on the checkpoints it skipped,
newest first, and the sweep is finished only when none is left. The lag (checkpoints waiting,
age of the oldest since it was written) is a metric and goes into leaderboard.json.

Early stopping: with a rule in sweep.json, after each round the rule (common.early_stop)
judges the running runs on their scores and a verdict becomes runs/<run>/stop.json, written
once. A run with a stop.json is finished here: never scored or judged again. A run whose
trainer judges itself at its rungs (hparams.json's `rungs`, trainer.rungs) is not judged
here, its rung checkpoints are left to its trainer while it trains, and the results the
trainer records are taken in (the view, TensorBoard, the metrics) as this evaluator's own
are; its scores count for every other run's verdict.

Stopping: SIGTERM (evaluator.signals) is seen between checkpoints and in the sleep between
rounds; the write in progress completes, the lease is released, watch() returns.

best/: each new best checkpoint is exported to best/<version>/ (version: milliseconds since
the epoch, so newer sorts later); only the newest `keep_best` exports are kept, and never is
the current best removed, whatever its age.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from common import early_stop as stopping
from common import layout, results, storage
from common.cli import UserError, first_line
from common.layout import Checkpoint, EarlyStop, RunDir, SweepDir
from common.lease import Lease
from evaluator import leaderboard
from evaluator.evaluate import CheckpointUnreadable, Evaluator, RunSetup
from evaluator.ledger import Ledger
from evaluator.metrics import EvalMetrics
from evaluator.signals import Shutdown
from evaluator.summaries import EvalSummaries

log = logging.getLogger("evaluator")

BROKEN_RETRY_S = 300.0  # how often a broken run is looked at again
BUSY_LEADERBOARD_S = 30.0  # leaderboard refreshes while checkpoints are still waiting
DEFAULT_KEEP_BEST = 3  # best/ exports kept: the current best and the two before it


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
    keep_best: int = DEFAULT_KEEP_BEST  # newest best/ exports kept (the current best always)
    shutdown: Shutdown = dataclasses.field(default_factory=Shutdown)  # SIGTERM's flag


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
        self.rule: EarlyStop | None = None  # sweep.json's, once read
        self.stop_requests: dict[str, dict] = {}  # run -> its stop.json: nothing more to do
        self.stop_read: set[str] = set()  # runs whose stop.json was looked for
        self.complete: dict[str, dict] = {}  # run -> complete.json, once there
        self.first_seen: dict[tuple[str, int], float] = {}  # checkpoint listed -> when written
        self.not_before: dict[tuple[str, int], float] = {}  # unreadable: retry after (monotonic)
        self.lag: dict[str, dict] = {}  # run -> {"waiting": n, "oldest_s": seconds}
        self.stops_made = 0  # stop.json files this process wrote

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
        """Checkpoints not scored yet, oldest first; none for a run asked to stop."""
        if self.stop_request(run) is not None:
            return []
        done = self.ledger(run).steps | self.left_to_trainer(run)
        pending = [c for c in run.checkpoints() if c.step not in done]
        for checkpoint in pending:
            key = (run.name, checkpoint.step)
            if key not in self.first_seen:
                self.first_seen[key] = written_at(checkpoint)
        return pending

    def left_to_trainer(self, run: RunDir) -> set[int]:
        """The rung steps the run's trainer scores and judges itself (hparams.json's `rungs`,
        trainer.rungs) while it trains; once the run is complete, any it left are ours."""
        rungs = self.setups[run.name].hparams.get("rungs") if run.name in self.setups else None
        if not isinstance(rungs, list) or self.completion(run) is not None:
            return set()
        return {step for step in rungs if isinstance(step, int)}

    def judged_by_trainer(self, run: RunDir) -> bool:
        """Whether the run's trainer applies the rule itself (at its rungs): not judged here."""
        setup = self.setups.get(run.name)
        return setup is not None and isinstance(setup.hparams.get("rungs"), list)

    def take_in(self, run: RunDir) -> bool:
        """Results others recorded since the last look (the trainer's rung results): into the
        results.jsonl view, TensorBoard and the metrics, as this evaluator's own go."""
        setup = self.setups.get(run.name)
        ledger = self.ledger(run)
        new = ledger.refresh()
        for entry in new:
            if "top1" not in entry or setup is None:
                continue
            confusion = results.read_confusion(entry.get("confusion") or "")
            self.summaries.write(run.eval_dir, entry["step"], entry, confusion,
                                 setup.manifest.labels)  # fmt: skip
            self.metrics.record(run.name, entry, entry["step"], ledger.best())
            log.info("%s step %d: top-1 %.4f, loss %.4f, scored by the %s", run.name,
                     entry["step"], entry["top1"], entry["loss"],
                     entry.get("scored_by") or "another evaluator")  # fmt: skip
        return bool(new)

    def stop_request(self, run: RunDir) -> dict | None:
        """The run's stop.json (read once per run and process; this process writes the rest)."""
        if run.name not in self.stop_read:
            self.stop_read.add(run.name)
            try:
                request = run.stop_request()
            except UserError as exc:  # unreadable, but there: the run was asked to stop
                request = {"reason": str(exc)}
            if request is not None:
                self.stop_requests[run.name] = request if isinstance(request, dict) else {}
        return self.stop_requests.get(run.name)

    def completion(self, run: RunDir) -> dict | None:
        """complete.json, once there (it never goes away)."""
        if run.name not in self.complete and run.is_complete():
            try:
                self.complete[run.name] = run.complete() or {}
            except UserError:
                self.complete[run.name] = {}
        return self.complete.get(run.name)

    def stopped(self, run: RunDir) -> dict | None:
        """Why a run stopped early: its stop.json, or the trainer's own stop (a NaN loss)."""
        request = self.stop_request(run)
        if request is not None:
            return request
        stopped = (self.completion(run) or {}).get("stopped")
        return stopped if isinstance(stopped, dict) else None

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
        confusion_uri = ledger.write_confusion(checkpoint.step, setup.manifest.labels, confusion)
        entry = results.entry(checkpoint.step, checkpoint.prefix, result, confusion_uri,
                              "evaluator", "float32", time.time())  # fmt: skip
        if ledger.record(entry) is not entry:
            return True  # another evaluator was first; its events and metrics are its own
        self.summaries.write(
            run.eval_dir, checkpoint.step, result, confusion, setup.manifest.labels
        )
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
        self.not_before[key] = time.monotonic() + min(self.options.interval, 30.0)
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
        stopped = {run.name: why for run in self.runs() if (why := self.stopped(run))}
        self.metrics.stopped_runs.set(len(stopped))
        rows = leaderboard.rank(ranked, stopped)
        if rows:
            top = rows[0]
            current = self.best_export or {}
            if (current.get("run"), current.get("step")) != (top["run"], top["best_step"]):
                self.best_export = self.export_best(top)
                if self.best_export and self.best_export is not current:
                    self.prune_best(self.best_export["export"])
        self.lease.check()
        return leaderboard.write(
            self.leaderboard_uri, rows, self.best_export, self.broken, stopped, self.lag
        )

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

    def prune_best(self, current: str) -> list[str]:
        """Remove best/ exports beyond the newest keep_best, never `current`; what went.

        Only complete exports named as this evaluator names them (digits) are counted or
        removed: anything else under best/ is someone else's.
        """
        best_dir = storage.join(self.out_dir, layout.BEST)
        versions = sorted(
            (v for v in storage.list_dirs(best_dir) if storage.basename(v).isdigit()),
            key=lambda v: int(storage.basename(v)),
        )
        keep = set(versions[-self.options.keep_best :]) | {current.rstrip("/")}
        removed = []
        for version in versions:
            if version not in keep:
                import tensorflow as tf

                self.lease.check()
                tf.io.gfile.rmtree(version)
                removed.append(version)
        if removed:
            log.info("removed %d older best export(s), keeping the newest %d",
                     len(removed), self.options.keep_best)  # fmt: skip
        return removed

    def finished(self, runs: list[RunDir]) -> bool:
        """Every run (and every run sweep.json promises) complete, with nothing left to score.

        A broken run counts as done: nothing more can be learnt from it until someone fixes it.
        So does a run asked to stop (its trainer saves once more; that checkpoint is not scored).
        """
        if not self.expected_run_names() <= {r.name for r in runs}:
            return False
        return bool(runs) and all(
            r.name in self.broken
            or self.stop_request(r) is not None
            or (self.completion(r) is not None and not self.pending(r))
            for r in runs
        )

    def round(self, runs: list[RunDir]) -> bool:
        """Score one checkpoint per run (see the module's docstring for which), then apply the
        early-stopping rule; True if anything new was recorded."""
        work: dict[str, tuple[RunDir, Checkpoint]] = {}
        catch_up: dict[str, tuple[RunDir, Checkpoint]] = {}
        now = time.monotonic()
        for run in runs:
            since = now - self.broken_at.get(run.name, -BROKEN_RETRY_S)
            if run.name in self.broken and since < BROKEN_RETRY_S:
                continue  # a fix takes a person; looking again every round would cost a pass
            try:
                self.setup(run)
                pending = self.pending(run)
            except RunBroken as exc:
                self.mark_broken(run, str(exc))
                continue
            self.broken.pop(run.name, None)
            self.take_in(run)
            ready = [c for c in pending if self.not_before.get((run.name, c.step), 0) <= now]
            if not ready:
                continue
            scored = self.ledger(run).steps
            newest = ready[-1]
            if not scored or newest.step > max(scored):
                work[run.name] = (run, newest)
            else:
                catch_up[run.name] = (run, newest)
        progressed = False
        for run, checkpoint in (work or catch_up).values():
            if self.options.shutdown.requested:
                break  # stopping: the next evaluator scores the rest
            try:
                progressed |= self.evaluate(run, checkpoint)
            except RunBroken as exc:
                self.mark_broken(run, str(exc))
        self.apply_early_stop(runs)
        self.measure_lag(runs)
        return progressed

    def backlog(self, runs: list[RunDir]) -> int:
        """Checkpoints waiting, as counted by the last round."""
        return sum(self.lag.get(run.name, {}).get("waiting", 0) for run in runs)

    def measure_lag(self, runs: list[RunDir]) -> None:
        """Checkpoints waiting per run and the age of the oldest: metrics and the leaderboard."""
        now = time.time()
        for run in runs:
            if run.name in self.broken:
                waiting: list[Checkpoint] = []
            else:
                waiting = self.pending(run)
            oldest = min((self.first_seen[(run.name, c.step)] for c in waiting), default=now)
            age = max(0.0, now - oldest)  # a bucket's clock may run a little ahead of ours
            self.lag[run.name] = {"waiting": len(waiting), "oldest_s": round(age, 1)}
            self.metrics.waiting.labels(run.name).set(len(waiting))
            self.metrics.oldest_waiting.labels(run.name).set(age)

    # ------------------------------------------------------------ early stopping

    def early_stop_rule(self) -> EarlyStop:
        """sweep.json's rule (none for a lone run, or until sweep.json is there and readable)."""
        if self.rule is None and self.options.sweep:
            try:
                sweep = SweepDir(self.options.target).load()
            except UserError as exc:
                log.warning("ignoring %s", exc)
                return EarlyStop()
            if sweep is not None:
                self.rule = sweep.early_stop
                log.info("early stopping: %s", self.rule.describe())
        return self.rule or EarlyStop()

    def apply_early_stop(self, runs: list[RunDir]) -> None:
        """Judge the running runs by the rule; each verdict becomes the run's stop.json."""
        rule = self.early_stop_rule()
        if rule.rule == "none":
            return
        histories: dict[str, list[stopping.Score]] = {}
        running: set[str] = set()
        by_name = {run.name: run for run in runs}
        total = 0
        for run in runs:
            if run.name in self.broken or run.name not in self.setups:
                continue
            histories[run.name] = stopping.scores_of(self.ledger(run).scored())
            steps = int(self.setups[run.name].hparams.get("steps") or 0)
            total = max(total, steps)
            # Its last checkpoint is there: it only exports now, stopping it saves nothing.
            trained = any(r == run.name and s >= steps for r, s in self.first_seen)
            if self.stop_request(run) is None and self.completion(run) is None and not trained:
                running.add(run.name)
        judge = {name for name in running if not self.judged_by_trainer(by_name[name])}
        for verdict in stopping.decide(rule, histories, running, total or None, judge):
            self.request_stop(by_name[verdict.run], verdict)

    def request_stop(self, run: RunDir, verdict: stopping.Stop) -> None:
        """Write the run's stop.json, once: if one is there already, that one stands."""
        record = {**verdict.record(), "requested": layout.now()}
        self.lease.check()
        if run.save_stop_request(record):
            log.info(
                "%s: stop requested at step %d (%s): %s",
                run.name,
                verdict.step,
                verdict.rule,
                verdict.reason,
            )
            self.summaries.stopped(run.eval_dir, verdict.step, verdict.reason)
            self.stops_made += 1
        else:
            self.stop_read.discard(run.name)  # someone else's: read theirs
            record = self.stop_request(run) or record
        self.stop_requests[run.name] = record


def written_at(checkpoint: Checkpoint) -> float:
    """When a checkpoint's index file (written last) was written; now if that cannot be read
    (the trainer may have just deleted it: it then drops out of the lag anyway)."""
    try:
        return storage.modified(checkpoint.prefix + ".index")
    except (OSError, UserError):
        return time.time()


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
    board_at = time.monotonic()
    # While catching up, the leaderboard (and the best model's export, which may take a
    # minute on a busy CPU) at most this often.
    board_every = max(options.interval, BUSY_LEADERBOARD_S)
    dirty = False  # scores recorded since the leaderboard was written
    idle_said = False
    while not options.shutdown.requested:
        started = time.monotonic()
        runs = session.runs()
        stops_before = session.stops_made
        progressed = session.round(runs)
        # More to score right away: go on without sleeping (a round scores one per run).
        busy = progressed and session.backlog(runs) > 0
        dirty |= progressed or session.stops_made != stops_before
        if progressed:
            last_news, idle_said = time.monotonic(), False
        if (board is None or dirty) and (not busy or started - board_at >= board_every):
            board, board_at, dirty = session.refresh_leaderboard(), started, False
        if session.finished(runs):
            if not options.keep_running:
                return board, True
            if not idle_said:
                log.info("every run is done; watching for runs added later")
                idle_said = True
        elif options.timeout is not None and time.monotonic() - last_news > options.timeout:
            log.warning("no new checkpoint for %.0f s; stopping", options.timeout)
            return board, False
        if not busy:
            options.shutdown.wait(options.interval - (time.monotonic() - started))
    log.info("stopped on request; the next evaluator goes on from the recorded scores")
    return board or {}, False
