"""`status`: one row per run of a sweep, from the bucket and (with a cluster) the Jobs.

The bucket says how far each run got (latest checkpoint step of its target, whether
complete.json is there, whether a trainer holds its lease now, whether it was stopped early
and why: complete.json's `stopped`, or the evaluator's stop.json) and how well it does (the
evaluator's leaderboard.json: best top-1, its step and loss, and the evaluator's lag: the
run's checkpoints waiting to be scored and the age of the oldest). With --backend kubernetes, each
run's Job adds its state: queued (suspended by Kueue), pending and why (unschedulable, image
pull), running, succeeded, or failed and why (the Job's condition, the last pod's exit code);
for a run of several workers (an Indexed Job), a `workers` column says how many run and, while
not all do, each worker's phase (`1/2 workers running (worker 0 running, 1 pending)`). A sweep
tuned in the cluster (`launcher tune --backend kubernetes`) also gets one line for its tuner
Job and one for its range test's Job, above `tune`'s stages.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from common import layout, storage
from common.cli import UserError
from common.lease import holder_gone
from launcher import names

Obj = dict[str, Any]
# Kubernetes' label (1.28+) and annotation on every pod of an Indexed Job: the pod's index.
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


@dataclasses.dataclass
class Row:
    run: str
    lr: float | None
    state: str
    step: int | None = None
    target: int | None = None
    loss: float | None = None
    best_top1: float | None = None
    best_step: int | None = None
    complete: bool = False
    rank: int | None = None  # the evaluator's, on leaderboard.json
    lag: str = ""  # checkpoints waiting for the evaluator, and the oldest one's age
    why: str = ""  # why the run was stopped early
    workers: str = ""  # a run of several workers: how many run now (cluster only)

    @property
    def best(self) -> bool:
        return self.rank == 1


def bucket_rows(sweep_dir: layout.SweepDir) -> list[Row]:
    """Every run sweep.json names or runs/ holds, in sweep.json's order."""
    sweep = sweep_dir.load()
    board = sweep_dir.leaderboard() or {}
    ranked = {r.get("run"): r for r in board.get("runs") or [] if isinstance(r, dict)}
    lags = board.get("lag") if isinstance(board.get("lag"), dict) else {}
    lrs: dict[str, float | None] = {c.run: c.lr for c in sweep.candidates} if sweep else {}
    for run in sweep_dir.runs():
        lrs.setdefault(run.name, _hparams(run).get("lr"))
    rows = []
    for name, lr in lrs.items():
        run = sweep_dir.run(name)
        hparams = _hparams(run)
        complete = run.complete()
        step = run.latest_checkpoint_step()
        stopped = _stopped(run, complete)
        if complete and stopped:
            state, step = f"stopped early ({stopped.get('rule', '?')})", complete.get("final_step")
        elif complete:
            state, step = "complete", complete.get("final_step", step)
        elif stopped:
            state = f"stopping ({stopped.get('rule', '?')})"
        elif _lease_live(run):
            state = "running"
        elif step is not None:
            state = "stopped"
        elif hparams:
            state = "started"
        elif run.has_hparams():
            state = "broken: unreadable hparams.json"
        else:
            state = "not started"
        entry = ranked.get(name) or {}
        rows.append(
            Row(
                run=name,
                lr=lr,
                state=state,
                step=step,
                target=hparams.get("steps"),
                loss=entry.get("best_loss"),
                best_top1=entry.get("best_top1"),
                best_step=entry.get("best_step"),
                complete=complete is not None,
                rank=entry.get("rank"),
                lag=_lag(lags.get(name)),
                why=_why(stopped),
            )
        )
    return rows


def _hparams(run: layout.RunDir) -> dict[str, Any]:
    """A run's hyperparameters; {} when unreadable (the trainer says why, in one sentence)."""
    try:
        return run.hparams() or {}
    except UserError:
        return {}


def _stopped(run: layout.RunDir, complete: dict[str, Any] | None) -> dict[str, Any] | None:
    """Why a run was stopped early (complete.json, else the evaluator's stop.json), or None."""
    stopped = (complete or {}).get("stopped")
    if isinstance(stopped, dict):
        return stopped
    if complete:
        return None
    try:
        request = run.stop_request()
    except UserError:
        return {"reason": "unreadable stop.json"}
    return request if isinstance(request, dict) else None


def _why(stopped: dict[str, Any] | None) -> str:
    if not stopped:
        return ""
    at = f"at step {stopped['step']}: " if isinstance(stopped.get("step"), int) else ""
    return f"{at}{stopped.get('reason', '?')}"


def _lag(lag: Any) -> str:
    """`3 waiting, oldest 95 s`; empty when nothing waits."""
    if not isinstance(lag, dict) or not lag.get("waiting"):
        return ""
    return f"{lag['waiting']} waiting, oldest {float(lag.get('oldest_s') or 0):.0f} s"


def _lease_live(run: layout.RunDir) -> bool:
    """A trainer holds the run's lease now (see lease_live)."""
    return lease_live(run.lease_uri)


def lease_live(uri: str) -> bool:
    """Whether the holder of the lease at `uri` is alive now.

    A holder on this host is alive while its process is (common.lease.holder_gone, as
    Lease.acquire judges it). A holder elsewhere is judged by its last renewal, against the
    lease's own wall-clock limit (2 ttl: machines' clocks may disagree a little). An
    unreadable lease counts as not held (status only says what runs; the lease itself decides
    who may write).
    """
    try:
        holder = layout.read_json_or_none(uri, "lease")
    except UserError:
        return False
    if not isinstance(holder, dict) or holder.get("released"):
        return False
    renewed, ttl = holder.get("renewed"), holder.get("ttl_s", 90)
    if not isinstance(renewed, (int, float)) or not isinstance(ttl, (int, float)):
        return False
    if holder_gone(holder):
        return False
    return time.time() - renewed < 2 * float(ttl)


# ---------------------------------------------------------------- cluster


def job_state(job: Obj, pods: list[Obj]) -> str:
    """What a Job is doing, in a few words, with the reason when it is not going well."""
    spec, status = job.get("spec") or {}, job.get("status") or {}
    conditions = {
        c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"
    }
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        return "succeeded"
    for kind in ("Failed", "FailureTarget"):
        if kind in conditions:
            c = conditions[kind]
            return _join("failed", c.get("reason"), c.get("message"))
    if spec.get("suspend"):
        return "queued (suspended)"
    retries = status.get("failed") or 0
    note = f" after {retries} failed pod(s){_last_exit(pods)}" if retries else ""
    live = [p for p in pods if (p.get("status") or {}).get("phase") in ("Pending", "Running")]
    if any((p.get("status") or {}).get("phase") == "Running" for p in live):
        return "running" + note
    for pod in live:
        why = _pending_reason(pod)
        if why:
            return _join("pending", why) + note
    return ("running" if status.get("active") else "pending") + note


def workers_state(job: Obj, pods: list[Obj]) -> str:
    """A run of several workers (an Indexed Job with completions > 1) that has not finished:
    `2/2 workers running`, or `1/2 workers running (worker 0 running, 1 pending)` with each worker's
    newest pod's phase. Empty for a single worker or a finished Job. `pods`: oldest first."""
    spec, status = job.get("spec") or {}, job.get("status") or {}
    count = spec.get("completions") or 1
    if spec.get("completionMode") != "Indexed" or not isinstance(count, int) or count < 2:
        return ""
    finished = {"Complete", "SuccessCriteriaMet", "Failed", "FailureTarget"}
    if any(
        c.get("type") in finished and c.get("status") == "True"
        for c in status.get("conditions") or []
    ):
        return ""
    newest: dict[int, Obj] = {}
    for pod in pods:
        index = _completion_index(pod)
        if index is not None:
            newest[index] = pod
    phases = []
    for index in range(count):
        pod = newest.get(index)
        if pod is None:
            phase = "no pod"
        elif (pod.get("metadata") or {}).get("deletionTimestamp"):
            phase = "terminating"
        else:
            phase = (pod.get("status") or {}).get("phase") or "Pending"
        phases.append(phase.lower())
    running = phases.count("running")
    summary = f"{running}/{count} workers running"
    if running == count:
        return summary
    return f"{summary} (worker {', '.join(f'{i} {p}' for i, p in enumerate(phases))})"


def _completion_index(pod: Obj) -> int | None:
    meta = pod.get("metadata") or {}
    for where in (meta.get("labels") or {}, meta.get("annotations") or {}):
        value = where.get(COMPLETION_INDEX)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _pending_reason(pod: Obj) -> str | None:
    status = pod.get("status") or {}
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return _join(c.get("reason") or "unschedulable", c.get("message"))
    for s in _container_statuses(status):
        waiting = (s.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") not in (None, "PodInitializing", "ContainerCreating"):
            return _join(waiting.get("reason"), waiting.get("message"))
    return None


def _container_statuses(status: Obj) -> list[Obj]:
    return (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])


def _last_exit(pods: list[Obj]) -> str:
    for pod in reversed(pods):
        status = pod.get("status") or {}
        for s in _container_statuses(status):
            term = (s.get("state") or {}).get("terminated") or {}
            if term.get("exitCode"):
                return f", last exit code {term['exitCode']} ({term.get('reason', '?')})"
    return ""


def _join(*parts: Any) -> str:
    return ": ".join(str(p).strip().splitlines()[0] for p in parts if p)


def cluster_states(cluster: Any, sweep: str) -> dict[str, tuple[str, str]]:
    """run name -> (its Job's state, its workers' state), for every trainer Job of the sweep."""
    selector = names.component_selector(sweep, "trainer")
    jobs = cluster.list("batch/v1", "Job", selector)
    pods = cluster.list("v1", "Pod", selector)
    states = {}
    for job in jobs:
        job_name = job["metadata"]["name"]
        mine = [p for p in pods if _pod_job(p) == job_name]
        mine.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
        run = (job["metadata"].get("labels") or {}).get(names.RUN_LABEL, job_name)
        states[run] = (job_state(job, mine), workers_state(job, mine))
    return states


def tuner_lines(cluster: Any, sweep: str) -> list[str]:
    """`tuner Job <sweep>-tuner: running`, and the same for its range test: one line for each
    of the two Jobs that exists."""
    lines = []
    for component, job_name in (
        ("tuner", names.tuner_job(sweep)),
        ("lr-find", names.lr_find_job(sweep)),
    ):
        job = cluster.get("batch/v1", "Job", job_name)
        if job is None:
            continue
        selector = names.component_selector(sweep, component)
        pods = [p for p in cluster.list("v1", "Pod", selector) if _pod_job(p) == job_name]
        pods.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
        lines.append(f"{component} Job {job_name}: {job_state(job, pods)}")
    return lines


def _pod_job(pod: Obj) -> str | None:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")


# ---------------------------------------------------------------- output


def table(rows: list[Row]) -> str:
    """A fixed-width table; the best run is marked with '*'."""
    header = ["", "run", "lr", "state", "step", "loss", "best top-1", "at step", "complete",
              "eval lag", "why stopped"]  # fmt: skip
    workers = any(r.workers for r in rows)  # a column only where some run has several
    if workers:
        header.insert(4, "workers")
    lines = [header]
    for r in rows:
        lines.append(
            [
                "*" if r.best else "",
                r.run,
                "" if r.lr is None else f"{r.lr:g}",
                r.state,
                *([r.workers] if workers else []),
                _step(r),
                "" if r.loss is None else f"{r.loss:.4f}",
                "" if r.best_top1 is None else f"{r.best_top1:.4f}",
                "" if r.best_step is None else str(r.best_step),
                "yes" if r.complete else "no",
                r.lag,
                r.why,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _step(r: Row) -> str:
    if r.step is None and r.target is None:
        return ""
    return f"{'-' if r.step is None else r.step}/{'?' if r.target is None else r.target}"


def main(args: argparse.Namespace) -> int:
    sweep_dir = layout.SweepDir.at(args.sweep)
    sweep = sweep_dir.load()
    if sweep is None and not storage.is_dir(sweep_dir.uri):
        raise UserError(f"{sweep_dir.uri} does not exist.")
    rows = bucket_rows(sweep_dir)
    if args.backend == "kubernetes":
        from launcher.cluster_backend import connect

        name = sweep.name if sweep else names.sweep_name_from(sweep_dir.name)
        cluster = connect(args)
        states = cluster_states(cluster, name)
        for row in rows:
            if row.run in states:
                row.state, row.workers = states[row.run]
            elif not row.complete:
                row.state = "no Job"
        for line in tuner_lines(cluster, name):
            print(line)
    if sweep is not None and sweep.stages:
        print(stages_table(sweep.stages))
    if not rows:
        print(f"no runs in {sweep_dir.uri} yet")
        return 0
    print(table(rows))
    return 0


def stages_table(stages: list[layout.Stage]) -> str:
    """`launcher tune`'s stages, one line each: what ran, why, the best after it, and why
    tuning ended (on the last)."""
    lines = []
    for stage in stages:
        state = "done" if stage.finished else "running"
        lrs = ",".join(f"{lr:g}" for lr in stage.lrs)
        best = stage.best or {}
        after = (f"; best after it {best['run']} (top-1 {best['top1']:.4f})"
                 if isinstance(best.get("top1"), (int, float)) else "")  # fmt: skip
        lines.append(f"stage {stage.name} ({state}): lrs {lrs or '-'}: {stage.why}{after}")
        if stage.ended:
            lines.append(f"tuning ended: {stage.ended}")
    return "\n".join(lines) + "\n"
