"""`tune`: find the learning rate without a human, in stages, into one sweep directory.

The seed's method by hand is: train a grid of decades to the same step, look at TensorBoard,
then try a finer grid around the best. `tune` does the same without the person:

1. lr-find: fastai's range test (`python -m trainer lr-find`, common.lr_range) into
   <out>/lr-find/, with the sweep's own training flags; its suggestion (valley) centres
2. coarse: the suggestion's decade and the one on each side (COARSE_DECADES), none above the
   lr where the range test's loss diverged; then
3. refine-1, refine-2, ...: today's `refine` factors around the best lr so far (launcher.refine),
   until a round improves the best top-1 by less than --threshold or than the noise of a top-1
   on the validation split (one standard error; with 57 images, about three of them), nothing
   is left to try, the budget of training steps is spent, or --max-rounds rounds ran.

Every sweep stage runs with early stopping (asha unless told otherwise, and a patience of
three grace periods unless --patience says otherwise): its trainers judge themselves at their
rungs against every run of the sweep, earlier stages' included. Each stage
is recorded in sweep.json (`stages`: what it ran and why, the best after it, why tuning ended)
before and after it runs, so that `status` shows them and the same command resumes: a
finished range test and complete runs are never redone. The evaluator ranks every stage's runs
on one leaderboard and exports the best, as for any sweep.

The stages run on a StageRunner: local processes (LocalRunner), or on Kubernetes
(launcher.tune_cluster) Jobs created by a tuner that itself runs in the cluster as a Job, so
that a closed laptop does not stop it: `tune --backend kubernetes` from a laptop only checks
everything, records sweep.json and creates that tuner Job.

The tune options are also values (tuner.budgetSteps, threshold, maxRounds, pollInterval), so
that a `helm install` with tuner.enabled can set them; a flag wins over its value.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import subprocess
import sys
from typing import Any, Protocol

from common import early_stop, layout, lr_range, manifest, storage
from common.cli import UserError
from launcher import record, refine, settings
from launcher.spec import SweepSpec

log = logging.getLogger("launcher")

# The suggestion times 10^k. The seed's five decades bracket an lr nobody has located; the range
# test has located it (in five runs of benchmarks/bench_tune.py the best lr found by hand was
# 0.9 to 4.3 times its valley suggestion), so one decade each side checks it, and refine's
# factors (x5, x0.2) walk on past an edge of the grid.
COARSE_DECADES = (-1, 0, 1)
DEFAULT_THRESHOLD = 0.01  # a refine round that adds less top-1 than this ends tuning
DEFAULT_MAX_ROUNDS = 3
DEFAULT_POLL_INTERVAL = 30.0  # seconds between a cluster tuner's looks at its Jobs and bucket
# Tune's default patience, in grace periods: a run whose best is three grace periods (30% of a
# run by default) old stops. On the held-out photos (benchmarks/bench_tune.py) the runs with
# lrs 2e-05 to 2e-04, the best ones, all peaked by step 36 of 120, and asha trained each
# stage's best on to step 120 without a better result.
PATIENCE_GRACES = 3


class StageRunner(Protocol):
    """Where the stages run: each call returns once its stage is over."""

    def lr_find(self, run_dir: str, trainer_args: list[str]) -> None:
        """Run the range test into run_dir (lr_find.json written), or raise UserError."""

    def sweep(self, spec: SweepSpec) -> None:
        """Train every candidate of spec to its end (or its early stop), with the evaluator
        ranking them; raise UserError (or exit with its code) when runs failed."""


@dataclasses.dataclass
class Options:
    budget_steps: int | None = None  # training steps for all stages together (lr-find too)
    threshold: float = DEFAULT_THRESHOLD
    max_rounds: int = DEFAULT_MAX_ROUNDS
    poll_interval: float = DEFAULT_POLL_INTERVAL  # the cluster runner's (launcher.tune_cluster)


# flag (argparse dest) -> its value under tuner.
_OPTION_VALUES = {"budget_steps": "budgetSteps", "threshold": "threshold",
                  "max_rounds": "maxRounds", "poll_interval": "pollInterval"}  # fmt: skip


def option_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The tune flags given, as values (`--threshold 0.02` -> tuner.threshold: 0.02)."""
    out: dict[str, Any] = {}
    for flag, key in _OPTION_VALUES.items():
        if getattr(args, flag, None) is not None:
            settings.set_dotted(out, f"tuner.{key}", getattr(args, flag))
    return out


def options_from(values: dict[str, Any]) -> Options:
    """The tune options from the values (the flags already merged in)."""
    return Options(
        settings.get(values, "tuner.budgetSteps", int, None),
        settings.get(values, "tuner.threshold", (int, float), DEFAULT_THRESHOLD),
        settings.get(values, "tuner.maxRounds", int, DEFAULT_MAX_ROUNDS),
        settings.get(values, "tuner.pollInterval", (int, float), DEFAULT_POLL_INTERVAL),
    )


def with_early_stop(values: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Every stage stops its losers at the rungs: asha, unless --early-stop or the values name
    a rule (`--early-stop none` is the way to tune without early stopping)."""
    if args.early_stop is None and settings.get(values, "earlyStop.rule", str, "none") == "none":
        return settings.merge(values, {"earlyStop": {"rule": "asha"}})
    return values


def noise_of(top1: float, images: int) -> float:
    """One standard error of a top-1 measured on `images` images (binomial): a round whose
    best is within it of the last best has found nothing the validation split can tell apart
    (one photo in 57 is 0.0175; the standard error of a top-1 of 0.75 there is 0.057)."""
    p = min(max(top1, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / images)


def with_patience(spec: SweepSpec) -> SweepSpec:
    """The spec with tune's default patience (PATIENCE_GRACES grace periods) unless one was
    given (--patience 0 is one: never); none when the runs' length is not known (--epochs)."""
    rule = spec.early_stop
    steps = _steps_flag(spec.trainer_args)
    grace = early_stop.grace_steps(rule, steps)
    if rule.patience is not None or rule.rule == "none" or grace is None:
        return spec
    rule = dataclasses.replace(rule, patience=PATIENCE_GRACES * grace)
    return dataclasses.replace(spec, early_stop=rule)


def _steps_flag(trainer_args: tuple[str, ...] | list[str]) -> int | None:
    args = list(trainer_args)
    return int(args[args.index("--steps") + 1]) if "--steps" in args else None


def coarse_grid(suggested: float, ceiling: float | None) -> list[float]:
    """Decades around the suggestion, largest first, at one significant digit (0.0012 ->
    0.01, 0.001, 0.0001); none at or above `ceiling` (where the range test's loss diverged),
    but always the suggestion's own decade."""
    centre = float(f"{suggested:.0e}")
    grid = [float(f"{centre * 10.0**k:.0e}") for k in sorted(COARSE_DECADES, reverse=True)]
    return [lr for lr in grid if ceiling is None or lr < ceiling or lr == centre]


def steps_spent(sweep_dir: layout.SweepDir) -> int:
    """Training steps done so far: every run's last step, and the range test's."""
    spent = 0
    for run in sweep_dir.runs():
        complete = run.complete() if run.is_complete() else None
        step = (complete or {}).get("final_step")
        spent += step if isinstance(step, int) else (run.latest_checkpoint_step() or 0)
    lr_dir = storage.join(sweep_dir.uri, layout.LR_FIND_DIR)
    if storage.exists(lr_range.uri(lr_dir)):
        spent += len(lr_range.LrFind.load(lr_dir).curve)
    return spent


def best_of(sweep_dir: layout.SweepDir) -> dict[str, Any] | None:
    """The leaderboard's best run: {"run", "lr", "top1"}, None before any score."""
    sweep = sweep_dir.load()
    try:
        run, lr, row = refine.best_run(sweep_dir, sweep)
    except UserError:
        return None
    return {"run": run, "lr": lr, "top1": row.get("best_top1")}


class Tuner:
    """The stages over one sweep directory (see the module's docstring)."""

    def __init__(self, base: SweepSpec, runner: StageRunner, options: Options) -> None:
        self.base, self.runner, self.options = with_patience(base), runner, options
        self.sweep_dir = base.sweep_dir
        self.lr_dir = storage.join(base.out, layout.LR_FIND_DIR)

    def stage(self, name: str) -> layout.Stage | None:
        sweep = self.sweep_dir.load()
        return next((s for s in sweep.stages if s.name == name), None) if sweep else None

    def run(self) -> dict[str, Any] | None:
        """Every stage to the end; the best run ({"run", "lr", "top1"})."""
        record.record(dataclasses.replace(self.base, lrs=()))  # sweep.json, before anything
        done = self.sweep_dir.load().stages
        if done and done[-1].ended:  # tuned already: the same command redoes nothing
            log.info("tune: already done (%s); for more, `launcher refine --launch` or a new "
                     "--out", done[-1].ended)  # fmt: skip
            return self.report(done[-1].best)
        found = self.find()
        best = self.sweep_stage("coarse", self.coarse_lrs(found), self.coarse_why(found))
        for round_ in range(1, self.options.max_rounds + 1):
            ended = self.next_round(round_, best)
            if ended is not None:
                self.end(ended, best)
                return best
            before = best
            best = self.sweep_stage(f"refine-{round_}", *self.refine_lrs(best))
            gain = (best or {}).get("top1", 0) - (before or {}).get("top1", 0)
            needed, what = self.needed_gain(before)
            if gain < needed:
                self.end(f"refine-{round_} improved the best top-1 by {gain:+.4f}, less than "
                         f"{what}", best)  # fmt: skip
                return best
        self.end(f"{self.options.max_rounds} refine rounds ran (--max-rounds)", best)
        return best

    def needed_gain(self, before: dict[str, Any] | None) -> tuple[float, str]:
        """What a refine round must add to the best top-1 to go on, and its words: the
        threshold, or the noise of a top-1 measured on the validation split if larger."""
        threshold = (self.options.threshold, f"the threshold {self.options.threshold:g}")
        images = self.validation_images()
        if not before or not images:
            return threshold
        noise = noise_of(before["top1"], images)
        if noise <= threshold[0]:
            return threshold
        return noise, (f"the noise of a top-1 of {before['top1']:.4f} on {images} validation "
                       f"images ({noise:.4f}, one standard error)")  # fmt: skip

    def validation_images(self) -> int:
        try:
            return manifest.load(self.base.data).count("validation")
        except (UserError, OSError, ValueError):
            return 0  # no noise figure: the threshold alone

    # ------------------------------------------------------------ stages

    def find(self) -> lr_range.LrFind:
        """The range test: run once, reused by a resumed tune."""
        if not storage.exists(lr_range.uri(self.lr_dir)):
            self.record(layout.Stage("lr-find", "fastai's range test: the loss against a "
                                     "geometrically rising lr", started=layout.now()))  # fmt: skip
            self.runner.lr_find(self.lr_dir, list(self.base.trainer_args))
        found = lr_range.LrFind.load(self.lr_dir)
        if found.lr is None:
            raise UserError(
                f"the range test in {self.lr_dir} suggests no learning rate (it stopped after "
                f"{len(found.curve)} steps: {found.stopped.reason}); see its lr_find.png, then "
                "pass --lrs to `launcher sweep` instead."
            )
        suggestions = ", ".join(
            f"{lr_range.SUGGESTION_LABELS[n]} {s.lr:.3g}" for n, s in found.suggestions.items()
        )
        stage = self.stage("lr-find") or layout.Stage("lr-find", "")
        if not stage.finished:
            self.record(dataclasses.replace(
                stage, why=f"fastai's range test: {suggestions}; {found.suggested} suggested",
                finished=layout.now(), lrs=[found.lr],
            ))  # fmt: skip
        log.info("tune: range test suggests %s (%s)", f"{found.lr:.3g}", suggestions)
        return found

    def coarse_lrs(self, found: lr_range.LrFind) -> list[float]:
        ceiling = found.stopped.lr if found.stopped.reason != lr_range.END else None
        return coarse_grid(found.lr, ceiling)

    def coarse_why(self, found: lr_range.LrFind) -> str:
        return (f"decades around the range test's {found.suggested} suggestion "
                f"{found.lr:.3g}")  # fmt: skip

    def refine_lrs(self, best: dict[str, Any] | None) -> tuple[list[float], str]:
        done = set(self.sweep_dir.load().run_names()) | {r.name for r in self.sweep_dir.runs()}
        lrs = refine.propose(best["lr"], done) if best else []
        why = f"refine factors {', '.join(f'{f:g}' for f in refine.FACTORS)} around the best lr"
        return lrs, f"{why} {best['lr']:g} (top-1 {best['top1']:.4f})" if best else why

    def next_round(self, round_: int, best: dict[str, Any] | None) -> str | None:
        """Why no refine round `round_` should run; None when it should."""
        if best is None:
            return "no run was scored: nothing to refine around"
        if not self.refine_lrs(best)[0]:
            return f"every lr around the best {best['lr']:g} has been run"
        budget = self.options.budget_steps
        if budget is not None and steps_spent(self.sweep_dir) >= budget:
            return f"the budget of {budget} training steps is spent"
        return None

    def sweep_stage(self, name: str, lrs: list[float], why: str) -> dict[str, Any] | None:
        """Run one sweep stage (its runs added to sweep.json first); the best after it."""
        lrs = self.within_budget(lrs)
        stage = self.stage(name)
        if stage is None or not stage.finished:
            spec = dataclasses.replace(self.base, lrs=tuple(lrs))
            runs = [layout.run_name_for_lr(lr) for lr in lrs]
            self.record(layout.Stage(name, why, list(lrs), runs, started=layout.now()))
            log.info("tune: %s: %s: lrs %s", name, why, ",".join(f"{lr:g}" for lr in lrs))
            record.record(spec)
            self.runner.sweep(spec)
            stage = layout.Stage(name, why, list(lrs), runs, started=self.stage(name).started,
                                 finished=layout.now(), best=best_of(self.sweep_dir))  # fmt: skip
            self.record(stage)
        best = stage.best
        if best:
            log.info("tune: after %s the best is %s (lr %g, top-1 %.4f)", name, best["run"],
                     best["lr"], best["top1"])  # fmt: skip
        return best

    def within_budget(self, lrs: list[float]) -> list[float]:
        """As many of lrs as the steps left pay for if every run trained to its end (at least
        one: a stage starts only with budget left)."""
        budget = self.options.budget_steps
        steps = self.run_steps()
        if budget is None or steps is None:
            return lrs
        left = budget - steps_spent(self.sweep_dir)
        keep = max(1, min(len(lrs), math.floor(left / steps)))
        if keep < len(lrs):
            log.info("tune: the budget pays for %d of %d runs of %d steps", keep, len(lrs), steps)
        return _nearest_first(lrs, keep)

    def run_steps(self) -> int | None:
        """Each run's length: --steps, else what a run of this sweep recorded (with --epochs
        it depends on the dataset); None before the first run started."""
        steps = _steps_flag(self.base.trainer_args)
        if steps is not None:
            return steps
        for run in self.sweep_dir.runs():
            steps = (run.hparams() or {}).get("steps")
            if isinstance(steps, int) and steps > 0:
                return steps
        return None

    def end(self, why: str, best: dict[str, Any] | None) -> None:
        sweep = self.sweep_dir.load()
        if sweep.stages:
            self.record(dataclasses.replace(sweep.stages[-1], ended=why))
        log.info("tune: done: %s", why)
        self.report(best)

    def report(self, best: dict[str, Any] | None) -> dict[str, Any] | None:
        if best:
            log.info("tune: best %s, lr %g, top-1 %.4f; the model: %s/best/", best["run"],
                     best["lr"], best["top1"], self.sweep_dir.uri)  # fmt: skip
        return best

    def record(self, stage: layout.Stage) -> None:
        record.record_stage(self.sweep_dir, stage)


def _nearest_first(lrs: list[float], keep: int) -> list[float]:
    """The `keep` of lrs nearest (in log scale) to their middle one, in their order."""
    if keep >= len(lrs):
        return lrs
    middle = math.log(lrs[len(lrs) // 2])
    chosen = sorted(lrs, key=lambda lr: abs(math.log(lr) - middle))[:keep]
    return [lr for lr in lrs if lr in chosen]


# ---------------------------------------------------------------- the local backend


class LocalRunner:
    """Stages as processes on this machine: the trainer's range test, then local sweeps."""

    def __init__(self, args: argparse.Namespace, data: str) -> None:
        self.args, self.data = args, data

    def lr_find_command(self, run_dir: str, trainer_args: list[str]) -> list[str]:
        # The sweep's flags unchanged: the range test ignores its length and schedule flags.
        return [sys.executable, "-m", "trainer", "lr-find", "--data", self.data,
                "--run-dir", run_dir, *trainer_args]  # fmt: skip

    def lr_find(self, run_dir: str, trainer_args: list[str]) -> None:
        command = self.lr_find_command(run_dir, trainer_args)
        log.info("tune: lr-find: %s", " ".join(command[1:]))
        done = subprocess.run(command)
        if done.returncode != 0:
            raise UserError(f"the range test failed (exit code {done.returncode}); its output "
                            "is above.")  # fmt: skip

    def sweep(self, spec: SweepSpec) -> None:
        from launcher import local

        code = local.run(spec, self.args)
        if code != 0:
            raise SystemExit(code)


# ---------------------------------------------------------------- the command


def tune_main(args: argparse.Namespace) -> int:
    from launcher import launch

    in_cluster = getattr(args, "in_cluster", False)
    if in_cluster and args.backend != "kubernetes":
        raise UserError("--in-cluster is what the tuner Job runs; it needs --backend kubernetes.")
    if in_cluster:
        from launcher import tune_cluster

        given = tune_cluster.values_from_env(args)
    else:
        given = launch.load_values(args, args.backend)
    given = settings.merge(given, option_overrides(args))
    options = options_from(given)
    values = with_early_stop(given, args)
    # The stages choose the lrs: one stands in for them while the rest is checked.
    spec = launch.resolve(args, values, args.backend, lrs=[1.0], check_schema=not in_cluster)
    spec = dataclasses.replace(spec, lrs=())
    if args.backend == "kubernetes":
        from launcher import tune_cluster

        if in_cluster:
            return tune_cluster.tune_in_cluster(args, values, spec, options)
        # The Job carries the rule as given (as the chart renders it); its pod's Tuner, like
        # start's sweep.json, adds the same default patience.
        return tune_cluster.start(args, given, spec, options)
    launch.check_bucket(spec)
    runner = LocalRunner(args, spec.data)
    if args.dry_run:
        print(" ".join(runner.lr_find_command(storage.join(spec.out, layout.LR_FIND_DIR),
                                              list(spec.trainer_args))))  # fmt: skip
        print("# then sweeps of lrs chosen from its suggestion (launcher sweep --dry-run shows "
              "one stage's commands)")  # fmt: skip
        return 0
    best = Tuner(spec, runner, options).run()
    return 0 if best else 1
