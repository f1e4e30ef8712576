"""`launcher tune --backend kubernetes`: the tuner runs inside the cluster, as a Job.

From a laptop (start): everything is checked as for `launcher sweep --backend kubernetes`
(settings and the chart's schema, names, the dataset, the cluster, conflicts, and that the
tuner's ServiceAccount exists), sweep.json's base record is written, and one Job is created
idempotently (launcher.apply): `<sweep>-tuner`, whose pod runs `python -m launcher tune
--backend kubernetes --in-cluster` with the same flags, the merged values in its env
(objects.VALUES_ENV) and the API rights of k8s/rbac.yaml's ServiceAccount. The laptop can
then close: the tuner goes on without it.

In the pod (tune_in_cluster), the Tuner of launcher.tune runs its stages on a ClusterRunner:

- lr_find: the Job `<sweep>-lr-find`, a trainer's pod running `python -m trainer lr-find`;
  done when lr_find.json is there, one sentence when the Job failed.
- sweep: the stage's objects as `launcher sweep` makes them (objects already there unchanged
  are fine: every stage adds its trainer Jobs to the same sweep), then it waits until every
  run of the stage is over. The evaluator Deployment runs with --keep-running, so unlike the
  local backend nobody can wait for it to exit: a run is over once its complete.json is there
  and the leaderboard ranks its last checkpoint (its row's last_step reaches complete.json's
  final_step: the stage's best is read from the leaderboard), or it was stopped early (a
  stopped run's last checkpoint is not scored), or its Job failed.

The Job states and the bucket are read every --poll-interval seconds (tuner.pollInterval);
each event is one line of the pod's log (a Job created, a run over, a stage done), and while
nothing happens one line every HEARTBEAT_S says what is awaited (the evaluator's lag included),
so the tuner never waits silently.

Failed runs end tuning once the rest of their stage is over, as on the local backend, but with
exit code 2: a retried tuner pod would find the same failed Jobs, so retrying cannot help (the
Job's failure policy fails at once on 2); deleting the failed Jobs and running tune again does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from common import layout, lr_range, storage
from common.cli import UserError
from launcher import apply, launch, names, record, settings, status
from launcher.cluster_backend import connect
from launcher.kube import Cluster
from launcher.objects import VALUES_ENV, Obj, Renderer, to_yaml
from launcher.spec import SweepSpec
from launcher.tune import Options, Tuner, with_patience

log = logging.getLogger("launcher")

HEARTBEAT_S = 600.0  # at most this long without a line in the tuner's log


# ---------------------------------------------------------------- from a laptop


def start(
    args: argparse.Namespace, values: dict[str, Any], spec: SweepSpec, options: Options
) -> int:
    """Check everything, record sweep.json, create the tuner Job (or print it: --dry-run)."""
    job = Renderer(values, namespace=args.namespace).tuner(spec, options)
    if args.dry_run:
        print(to_yaml([job]), end="")
        return 0
    launch.check_bucket(spec)
    cluster = connect(args)
    _check_service_account(cluster, job)
    todo = apply.plan(cluster, [job])  # a conflict is found before anything is written
    record.record(with_patience(spec))  # sweep.json's base record, as Tuner.run writes it
    apply.apply(cluster, todo.create)
    name, ns = job["metadata"]["name"], cluster.namespace
    state = "created" if todo.create else "already there and unchanged"
    print(f"tune {spec.name}: tuner Job {name} in namespace {ns} ({state})")
    print(f"  follow: kubectl -n {ns} logs -f job/{name}")
    print(f"  stages: python -m launcher status --sweep {spec.out} --backend kubernetes -n {ns}")
    print(f"  remove: python -m launcher delete --sweep {spec.name} -n {ns}")
    return 0


def _check_service_account(cluster: Cluster, job: Obj) -> None:
    """Without its ServiceAccount the Job could make no pod, and nobody would be told."""
    account = job["spec"]["template"]["spec"]["serviceAccountName"]
    if cluster.get("v1", "ServiceAccount", account) is None:
        raise UserError(
            f"the tuner runs as ServiceAccount {account}, which namespace {cluster.namespace} "
            "does not have: create it with k8s/rbac.yaml (kubectl apply -f k8s/rbac.yaml, its "
            "namespace replaced) or the chart's tuner.rbac.create, or set "
            "tuner.serviceAccountName to one with the same rights."
        )


# ---------------------------------------------------------------- in the pod


def values_from_env(args: argparse.Namespace) -> dict[str, Any]:
    """The values the tuner Job carries (VALUES_ENV), with this command's flags merged in."""
    text = os.environ.get(VALUES_ENV)
    if not text:
        raise UserError(
            f"--in-cluster reads its settings from {VALUES_ENV}, which is not set; it is what "
            "the tuner Job runs: start one with `launcher tune --backend kubernetes`."
        )
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{VALUES_ENV} is not valid JSON ({exc}).") from None
    if not isinstance(values, dict):
        raise UserError(f"{VALUES_ENV} must hold a JSON object of values.")
    return settings.merge(values, launch.overrides_from(args))


def tune_in_cluster(
    args: argparse.Namespace, values: dict[str, Any], spec: SweepSpec, options: Options
) -> int:
    """The Tuner over a ClusterRunner, in the tuner Job's pod."""
    launch.check_bucket(spec)
    runner = ClusterRunner(connect(args), values, spec, options.poll_interval)
    if Tuner(spec, runner, options).run() is None:
        # Exit 2: a retried pod would find tuning ended and end the same way.
        raise UserError(
            f"tuning ended with no run scored; see `python -m launcher status --sweep "
            f"{spec.out} --backend kubernetes`."
        )
    return 0


class ClusterRunner:
    """Stages as Jobs of this cluster (see the module's docstring). `sleep` waits between
    polls (a test plays the cluster there)."""

    def __init__(
        self,
        cluster: Cluster,
        values: dict[str, Any],
        base: SweepSpec,
        poll_interval: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cluster, self.values, self.base = cluster, values, base
        self.renderer = Renderer(values)  # the cluster puts each object in its namespace
        self.poll_interval, self.sleep = poll_interval, sleep

    def lr_find(self, run_dir: str, trainer_args: list[str]) -> None:
        spec = dataclasses.replace(self.base, trainer_args=tuple(trainer_args))
        self.create(self.renderer.lr_find(spec, run_dir), "the range test's")
        job = names.lr_find_job(spec.name)
        found = lr_range.uri(run_dir)
        said = time.monotonic()
        while True:
            live = self.cluster.get("batch/v1", "Job", job)  # before the bucket: see wait()
            if storage.exists(found):
                log.info("tune: lr-find: Job %s wrote %s", job, found)
                return
            state = "is gone (deleted?)" if live is None else status.job_state(live, [])
            if state == "succeeded":
                state = f"succeeded but wrote no {found}"
            if live is None or state.startswith(("failed", "succeeded")):
                raise UserError(
                    f"the range test's Job {job} {state}; see `kubectl -n "
                    f"{self.cluster.namespace} logs job/{job}`, then delete the Job and run "
                    "tune again."
                )
            if time.monotonic() - said >= HEARTBEAT_S:
                log.info("tune: lr-find: waiting for Job %s (%s)", job, state)
                said = time.monotonic()
            self.sleep(self.poll_interval)

    def sweep(self, spec: SweepSpec) -> None:
        launch.validate(spec, self.values, "kubernetes", check_schema=False)  # the Job names
        self.create(self.renderer.sweep(spec), "this stage's")
        failed = self.wait(spec)
        if failed:
            raise UserError(
                f"{len(failed)} run(s) of this stage failed ({'; '.join(failed)}); see `kubectl "
                f"-n {self.cluster.namespace} logs job/JOB`, then delete the failed Jobs and run "
                "tune again to retry them."
            )

    # ------------------------------------------------------------ parts

    def create(self, objs: list[Obj], what: str) -> None:
        todo = apply.plan(self.cluster, objs)
        apply.apply(self.cluster, todo.create)  # one line per object created
        if todo.unchanged:
            log.info("tune: %d of %s objects already there and unchanged", len(todo.unchanged),
                     what)  # fmt: skip

    def wait(self, spec: SweepSpec) -> list[str]:
        """Poll until every run of the stage is over; the failed ones, each with why."""
        jobs = {layout.run_name_for_lr(lr): names.trainer_job(spec.name, lr) for lr in spec.lrs}
        failed: list[str] = []
        ends: dict[str, int] = {"finished": 0, "stopped": 0, "failed": 0}
        said = time.monotonic()
        while jobs:
            # The Jobs before the bucket: a Job seen finished wrote its files before that.
            live = self.trainer_jobs(spec.name)
            board = spec.sweep_dir.leaderboard() or {}
            waiting = []
            for run, job in list(jobs.items()):
                over, why = run_over(spec.sweep_dir.run(run), job, live.get(job), board)
                if not over:
                    waiting.append(f"{run} ({why})")
                    continue
                del jobs[run]
                log.info("tune: %s %s", run, why)
                said = time.monotonic()
                ends[over] += 1
                if over == "failed":
                    failed.append(f"{run}: {why}")
            if waiting and time.monotonic() - said >= HEARTBEAT_S:
                log.info("tune: waiting for %d run(s): %s", len(waiting), "; ".join(waiting))
                said = time.monotonic()
            if jobs:
                self.sleep(self.poll_interval)
        log.info("tune: every run of the stage is over: %d finished, %d stopped early, %d failed",
                 *ends.values())  # fmt: skip
        return failed

    def trainer_jobs(self, sweep: str) -> dict[str, Obj]:
        selector = names.component_selector(sweep, "trainer")
        return {j["metadata"]["name"]: j for j in self.cluster.list("batch/v1", "Job", selector)}


def run_over(
    run: layout.RunDir, job_name: str, job: Obj | None, board: dict[str, Any]
) -> tuple[str, str]:
    """(`finished`, `stopped` or `failed`, what happened) for a run that is over, ("", what it
    waits for) for one that is not: see the module's docstring."""
    complete = run.complete()
    if complete is None:
        if job is None:
            return "failed", f"has no complete.json and its Job {job_name} is gone"
        state = status.job_state(job, [])
        if state.startswith("failed"):
            return "failed", f"Job {job_name} {state}"
        if state == "succeeded":
            return "failed", f"Job {job_name} succeeded but the run has no complete.json"
        step = run.latest_checkpoint_step()
        return "", f"{state}, checkpoint {'-' if step is None else step}"
    step = complete.get("final_step")
    stopped = complete.get("stopped") or run.stop_request()
    if stopped:
        return "stopped", f"stopped early at step {step}: {stopped.get('reason', '?')}"
    broken = {b.get("run"): b.get("reason") for b in board.get("broken") or []}
    if run.name in broken:
        return (
            "finished",
            f"finished at step {step}; the evaluator cannot score it: {broken[run.name]}",
        )
    row = next((r for r in board.get("runs") or [] if r.get("run") == run.name), {})
    last = row.get("last_step")
    if isinstance(step, int) and isinstance(last, int) and last >= step:
        return "finished", f"finished at step {step}, best top-1 {row.get('best_top1', 0):.4f}"
    lag = (board.get("lag") or {}).get(run.name) or {}
    behind = f": {lag['waiting']} checkpoint(s) waiting" if lag.get("waiting") else ""
    return "", f"finished at step {step}, waiting for the evaluator to score it{behind}"
