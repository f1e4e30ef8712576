"""`--backend local`: the sweep's trainers and its evaluator as processes on this machine.

The trainers run the same command line as the cluster's Jobs (`python -m trainer --data ...
--run-dir <out>/runs/lr-X --lr X [trainer flags]`), `--parallel` at a time, plus one evaluator
on the whole sweep. Every candidate sweep.json names is run (a rerun, or a refine, adds to the
same sweep), except those already complete: they are never retrained, and the others resume
from their last checkpoint.

Each child's output goes, whole, to `<logs>/<run>.log` (and `evaluator.log`), appended on every
start; the default logs dir is `<out>/logs` for a local sweep dir and `./logs/<name>` for a
gs:// one (a log is no object to stream to a bucket). The console gets one line per event:
started, the trainer's step lines, the evaluator's scores, finished with the exit code, and for
a failure the last lines of its log.

With --workers N > 1 (values trainer.workers), each run is N trainer processes that train it
together: the same command plus `--workers N --worker-hosts 127.0.0.1:P0,...,127.0.0.1:P(N-1)
--worker-index i`, on ports free when the run starts. Worker 0 (the chief) logs to
`<run>.log`, worker i to `<run>.worker-<i>.log`; the run is over when all its processes have
exited, and it counts against --parallel as N trainers (at least one run at a time).

Trainers run at a lower CPU priority than the evaluator (niceness +10): on a cluster the
evaluator has its own CPU, here it shares the cores with every trainer, and its scores and
early-stopping verdicts are worth most when they are timely. The trainers lose nothing when
the evaluator is idle.

Ctrl-C (or SIGTERM) stops every child the way an eviction would: each gets SIGINT, saves a
checkpoint after its current step and exits; the launcher waits for them and exits 130. A
second Ctrl-C kills them at once. Children run in their own session, so the terminal's Ctrl-C
reaches only the launcher, which decides.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO

from common import layout, storage
from launcher import record
from launcher.spec import SweepSpec

log = logging.getLogger("launcher")

LOGS = layout.LOGS  # under a local sweep dir: the launcher's own, read by nobody else
EVALUATOR_INTERVAL_S = 5
TRAINER_NICENESS = 10  # added to the launcher's own: see the module's docstring
STOP_GRACE_S = 180.0  # a trainer finishes its step and saves; the first step may be slow
TAIL_LINES = 15
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What a child says that is worth a console line (the rest stays in its log file).
_TRAINER_NEWS = re.compile(
    r"(step \d+, loss|resumed from|training |stopped at|run complete|already complete|"
    r"exported|stopped early|stop requested|error|Error)"
)
_EVALUATOR_NEWS = re.compile(r"(top-1|best model|stop requested|early stopping|error|Error)")
_LOG_PREFIX = re.compile(r"^\d\d:\d\d:\d\d [\w.]+: ")


def default_parallel() -> int:
    """Trainers at a time: each wants about 4 cores and 6 GiB (TensorFlow on CPU); at least 1."""
    cores = os.cpu_count() or 1
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = 8.0
    return max(1, min(cores // 4, int(memory_gib // 6)))


LOCALHOST = "127.0.0.1"


def trainer_command(spec: SweepSpec, lr: float) -> list[str]:
    return [sys.executable, "-m", "trainer", *spec.trainer_args_for(lr)]


def trainer_commands(spec: SweepSpec, lr: float, ports: list[int] | None = None) -> list[list[str]]:
    """The command of every worker of one run (worker i at i): the single trainer's, or, with
    several workers, that command plus each one's worker flags on 127.0.0.1 `ports` (default:
    ports free now)."""
    command = trainer_command(spec, lr)
    if spec.workers <= 1:
        return [command]
    ports = free_ports(spec.workers) if ports is None else ports
    hosts = ",".join(f"{LOCALHOST}:{port}" for port in ports)
    return [
        [
            *command,
            "--workers",
            str(spec.workers),
            "--worker-hosts",
            hosts,
            "--worker-index",
            str(i),
        ]
        for i in range(spec.workers)
    ]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 now (all held at once, then released)."""
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOCALHOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]


def worker_log(logs: str, run: str, index: int) -> str:
    """Worker 0 (the chief, or the only trainer) keeps `<run>.log`."""
    return os.path.join(logs, f"{run}.log" if index == 0 else f"{run}.worker-{index}.log")


def _worker_name(run: str, index: int) -> str:
    return run if index == 0 else f"{run}/worker-{index}"


def evaluator_command(spec: SweepSpec, *, once: bool = False) -> list[str]:
    mode = ["--once"] if once else ["--interval", str(EVALUATOR_INTERVAL_S)]
    return [sys.executable, "-m", "evaluator", "--sweep-dir", spec.out, *mode]


def logs_dir(spec: SweepSpec, given: str | None) -> str:
    if given:
        return os.path.abspath(given)
    if storage.is_gcs(spec.out):
        return os.path.abspath(os.path.join(LOGS, spec.name))
    return os.path.join(spec.out, LOGS)


class Child:
    """One process, its output copied to a log file; notable lines logged with its name."""

    def __init__(
        self, name: str, argv: list[str], log_path: str, news: re.Pattern, niceness: int = 0
    ) -> None:
        self.name, self.argv, self.log_path, self.news = name, argv, log_path, news
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.started = time.monotonic()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        self._log: IO[str] = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed by the reader
        self._log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n")
        self._log.flush()
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=env,
            start_new_session=True,  # the terminal's Ctrl-C reaches the launcher only
        )
        if niceness:
            # Right after the start, before the child's threads exist (they inherit it).
            with contextlib.suppress(OSError, AttributeError):  # not allowed, or not Unix
                mine = os.getpriority(os.PRIO_PROCESS, 0)
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, mine + niceness)
        self._reader = threading.Thread(target=self._read, name=f"log-{name}", daemon=True)
        self._reader.start()
        log.info("%s: started (pid %d), log %s", name, self.proc.pid, log_path)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            line = line.rstrip()
            if line:
                self.tail.append(line)
            if self.news.search(line):
                log.info("%s: %s", self.name, _LOG_PREFIX.sub("", line))
        self._log.close()

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None:
            self._reader.join(timeout=5)  # the last lines are in the tail before we report
        return code

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Stopper:
    """Turns Ctrl-C / SIGTERM into a flag; a second one means 'now'."""

    def __init__(self) -> None:
        self.count = 0
        self._saved: dict[int, object] = {}

    def __enter__(self) -> Stopper:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count == 1:
            log.info("%s: stopping every run after its current step (again: at once)",
                     signal.Signals(signum).name)  # fmt: skip


def run(spec: SweepSpec, args: argparse.Namespace) -> int:
    """Run the sweep to the end (or to Ctrl-C); 0 when every run is complete."""
    sweep = record.record(spec)  # sweep.json first: the evaluator waits for what it names
    sweep_dir = spec.sweep_dir
    logs = logs_dir(spec, getattr(args, "logs_dir", None))
    parallel = max(1, (args.parallel or default_parallel()) // spec.workers)  # runs at a time
    todo = collections.deque()
    for candidate in sweep.candidates:
        if sweep_dir.run(candidate.run).is_complete():
            log.info("%s: already complete, not retrained", candidate.run)
        else:
            todo.append(candidate)
    each = f" of {spec.workers} worker processes" if spec.workers > 1 else ""
    log.info(
        "sweep %s: %d run(s), %d to train, %d at a time%s; logs in %s",
        spec.name, len(sweep.candidates), len(todo), parallel, each, logs,
    )  # fmt: skip
    with Stopper() as stopper:
        code = _drive(spec, todo, parallel, logs, stopper)
    if code == 130:
        print("stopped; the same command resumes the sweep", file=sys.stderr)
        return 130
    print_leaderboard(sweep_dir)
    print(f"TensorBoard: tensorboard --logdir {spec.out}")
    return code


def _drive(
    spec: SweepSpec, todo: collections.deque, parallel: int, logs: str, stopper: Stopper
) -> int:
    running: dict[str, list[Child]] = {}  # run -> its workers (one without --workers)
    failed: dict[str, int] = {}
    evaluator = Child(
        "evaluator", evaluator_command(spec), os.path.join(logs, "evaluator.log"), _EVALUATOR_NEWS
    )
    evaluator_reported = False
    while (todo or running) and not stopper.count:
        while todo and len(running) < parallel:
            candidate = todo.popleft()
            running[candidate.run] = [
                Child(
                    _worker_name(candidate.run, i),
                    argv,
                    worker_log(logs, candidate.run, i),
                    _TRAINER_NEWS,
                    niceness=TRAINER_NICENESS,
                )
                for i, argv in enumerate(trainer_commands(spec, candidate.lr))
            ]
        for name, group in list(running.items()):
            codes = [child.poll() for child in group]
            if any(code is None for code in codes):
                continue  # a run is over when every one of its workers has exited
            del running[name]
            complete = spec.sweep_dir.run(name).is_complete()
            code = next((c for c in codes if c), 0)  # the chief's, else the first worker's
            if code == 0 and complete:
                log.info("%s: finished, exit code 0 (%.0f s)", name, group[0].elapsed())
            else:
                failed[name] = code
                for child, own in zip(group, codes, strict=True):
                    if own or child is group[0]:
                        why = "" if own else " but the run is not complete"
                        _report_failure(child, own, why)
        if not evaluator_reported and evaluator.poll() not in (None, 0):
            _report_failure(evaluator, evaluator.proc.returncode, "; the leaderboard may lag")
            evaluator_reported = True
        time.sleep(0.2)
    if stopper.count:
        _stop([*(c for group in running.values() for c in group), evaluator], stopper)
        return 130
    if failed:
        # The evaluator waits for every run sweep.json names, so it would wait for the failed
        # ones forever: stop it and score each run's latest checkpoint once instead.
        _stop([evaluator], stopper)
        if stopper.count > 0:
            return 130
        once = Child(
            "evaluator",
            evaluator_command(spec, once=True),
            os.path.join(logs, "evaluator.log"),
            _EVALUATOR_NEWS,
        )
        _wait([once], stopper)
        log.info("%d run(s) failed: %s", len(failed), ", ".join(sorted(failed)))
        return 130 if stopper.count else 1
    _wait([evaluator], stopper)
    if stopper.count:
        return 130
    code = evaluator.poll()
    if code:
        _report_failure(evaluator, code, "")
        return 1
    log.info("evaluator: finished, exit code 0 (%.0f s)", evaluator.elapsed())
    return 0


def _report_failure(child: Child, code: int, why: str) -> None:
    log.error(
        "%s: failed, exit code %d%s; last lines of %s:", child.name, code, why, child.log_path
    )
    for line in list(child.tail)[-8:]:
        print(f"    {line}", file=sys.stderr)


def _wait(children: list[Child], stopper: Stopper) -> None:
    """Wait for children to exit by themselves; Ctrl-C turns this into a stop."""
    while any(c.poll() is None for c in children):
        if stopper.count:
            _stop(children, stopper)
            return
        time.sleep(0.2)


def _stop(children: list[Child], stopper: Stopper) -> None:
    """SIGINT each child (they checkpoint), wait; a further Ctrl-C or the grace time: SIGKILL."""
    live = [c for c in children if c.poll() is None]
    first = stopper.count
    for child in live:
        child.signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    killed = False
    while any(c.poll() is None for c in live):
        if not killed and (stopper.count > max(first, 1) or time.monotonic() > deadline):
            for child in live:
                child.signal(signal.SIGKILL)
            log.info("killed what was still running")
            killed = True
        time.sleep(0.2)
    for child in live:
        log.info("%s: stopped, exit code %s", child.name, child.proc.returncode)


def print_leaderboard(sweep_dir: layout.SweepDir) -> None:
    from launcher.status import bucket_rows, table

    rows = bucket_rows(sweep_dir)
    ranked = sorted(rows, key=lambda r: (r.best_top1 is None, -(r.best_top1 or 0.0), r.run))
    print(f"leaderboard of {sweep_dir.uri}:")
    print(table(ranked))
