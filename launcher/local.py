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
reaches only the launcher, which decides. A launcher that dies without a word (SIGKILL, a
closed laptop's OOM killer) takes its children with it: the kernel sends each SIGTERM (Linux's
parent-death signal), so none trains on unseen, its output going nowhere.

One launcher per sweep dir (a lease, `launcher.lease.json`): a second one on the same --out
(another `sweep`, a `refine --launch`) records its candidates in sweep.json and leaves the
training to the running launcher, which reads sweep.json every few seconds and queues what was
added; the second one waits until that launcher is done, then checks the sweep itself (nothing
complete is retrained) and exits with what happened. So --parallel holds across them, and each
exit code says how the sweep ended, not who trained it.

The evaluator is supervised as a Deployment's pod would be: one that exits while runs are
left is started again (after 5, 10, 20 s when it crashed; after a crash loop, one line says
that the sweep goes on without scores). A run whose trainer another process holds (its lease
is live) is waited for, not failed; one complete when its trainer exits is finished, whatever
the exit code.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from common import layout, storage
from common.lease import Lease, LeaseHeld
from launcher import record
from launcher.spec import SweepSpec

log = logging.getLogger("launcher")

LOGS = layout.LOGS  # under a local sweep dir: the launcher's own, read by nobody else
EVALUATOR_INTERVAL_S = 5
TRAINER_NICENESS = 10  # added to the launcher's own: see the module's docstring
STOP_GRACE_S = 180.0  # a trainer finishes its step and saves; the first step may be slow
TAIL_LINES = 15
SWEEP_POLL_S = 3.0  # how often sweep.json is read for candidates another command added
LEADER_POLL_S = 2.0  # a second launcher looks this often whether the first one is done
EVALUATOR_BACKOFF_S = (5.0, 10.0, 20.0)  # waits before each restart of a crashed evaluator
EVALUATOR_HEALTHY_S = 600.0  # an evaluator up this long has its crash count forgotten
# The launcher's own lease on a sweep dir; read only by launchers (not a layout others read).
LAUNCHER_LEASE = "launcher.lease.json"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
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
    interval = spec.eval_interval or EVALUATOR_INTERVAL_S
    mode = ["--once"] if once else ["--interval", f"{interval:g}"]
    return [sys.executable, "-m", "evaluator", "--sweep-dir", spec.out, *mode]


def logs_dir(spec: SweepSpec, given: str | None) -> str:
    if given:
        return os.path.abspath(given)
    if storage.is_gcs(spec.out):
        return os.path.abspath(os.path.join(LOGS, spec.name))
    return os.path.join(spec.out, LOGS)


def _die_with_launcher() -> Callable[[], None] | None:
    """What a child runs between fork and exec so that the launcher's death ends it.

    Why the parent-death signal and not a process group or a lease the children watch: a
    SIGKILLed launcher signals no group, and a watched lease would take code in every child
    and a ttl's delay; prctl(PR_SET_PDEATHSIG) is the kernel's own promise, kept however the
    launcher dies, and it survives the exec. SIGTERM, not SIGKILL: a trainer saves after its
    current step first, as on an eviction. The signal comes when the thread that started the
    child ends, so children are started from the main thread only (which lives as long as the
    launcher does). Everything is looked up before the fork: in the child only two C calls
    and a comparison run, nothing that could wait on a lock another thread held. Linux only;
    elsewhere None (children then outlive a killed launcher, as before).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    launcher, sigterm, getppid = os.getpid(), int(signal.SIGTERM), os.getppid

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sigterm)
        if getppid() != launcher:  # the launcher died before prctl: its signal never comes
            os._exit(128 + sigterm)

    return preexec


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
            preexec_fn=_die_with_launcher(),
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
    record.record(spec)  # sweep.json first: the evaluator waits for what it names
    sweep_dir = spec.sweep_dir
    logs = logs_dir(spec, getattr(args, "logs_dir", None))
    parallel = max(1, (args.parallel or default_parallel()) // spec.workers)  # runs at a time
    lease = Lease(storage.join(spec.out, LAUNCHER_LEASE), role="launcher")
    with Stopper() as stopper:
        if not _lead(lease, stopper):
            print("stopped waiting; the same command resumes the sweep", file=sys.stderr)
            return 130
        try:
            sweep = sweep_dir.load()  # as it is now: another launcher may have added runs
            todo = collections.deque()
            for candidate in sweep.candidates if sweep else []:
                if sweep_dir.run(candidate.run).is_complete():
                    log.info("%s: already complete, not retrained", candidate.run)
                else:
                    todo.append(candidate)
            each = f" of {spec.workers} worker processes" if spec.workers > 1 else ""
            total = len(sweep.candidates) if sweep else 0
            log.info(
                "sweep %s: %d run(s), %d to train, %d at a time%s; logs in %s",
                spec.name, total, len(todo), parallel, each, logs,
            )  # fmt: skip
            code = Drive(spec, todo, parallel, logs, stopper).run()
        finally:
            lease.release()
    if code == 130:
        print("stopped; the same command resumes the sweep", file=sys.stderr)
        return 130
    print_leaderboard(sweep_dir)
    print(f"TensorBoard: tensorboard --logdir {spec.out}")
    return code


def _lead(lease: Lease, stopper: Stopper) -> bool:
    """Take the sweep's launcher lease, waiting while another live launcher holds it (it trains
    what this one recorded); False on Ctrl-C."""
    said = False
    while True:
        try:
            lease.acquire(wait_s=0)
            if said:
                log.info("the other launcher is done; checking the sweep")
            return True
        except LeaseHeld:
            if not said:
                holder = _holder(lease.uri)
                log.info(
                    "another launcher runs this sweep (%s): it trains every run sweep.json "
                    "names, these included; waiting for it to finish",
                    holder,
                )
                said = True
        if stopper.count:
            return False
        time.sleep(LEADER_POLL_S)


def _holder(uri: str) -> str:
    from common.lease import describe

    try:
        holder = layout.read_json_or_none(uri, "lease")
    except Exception:  # noqa: BLE001 - only for the message
        holder = None
    return describe(holder) if isinstance(holder, dict) else uri


class Drive:
    """The sweep's processes, from start to end: trainers `parallel` runs at a time, one
    evaluator beside them (restarted as a Deployment's pod would be), and the candidates that
    other commands add to sweep.json meanwhile."""

    def __init__(
        self,
        spec: SweepSpec,
        todo: collections.deque,
        parallel: int,
        logs: str,
        stopper: Stopper,
    ) -> None:
        self.spec, self.todo, self.parallel, self.logs, self.stopper = (
            spec, todo, parallel, logs, stopper,
        )  # fmt: skip
        self.known = {c.run for c in todo} | set(_run_names(spec.sweep_dir))
        self.running: dict[str, list[Child]] = {}  # run -> its workers (one without --workers)
        self.held: dict[str, layout.Candidate] = {}  # runs another live trainer is training
        self.failed: dict[str, int] = {}
        self.evaluator = EvaluatorKeeper(spec, logs)
        self.swept_at = time.monotonic()

    def run(self) -> int:
        while not self.stopper.count:
            self.poll_sweep()
            self.start_trainers()
            self.reap_trainers()
            self.watch_held()
            busy = bool(self.todo or self.running or self.held)
            self.evaluator.tend(busy)
            if not busy and (self.failed or self.evaluator.gave_up or self.evaluator.done):
                self.poll_sweep(now=True)  # a run added at the last moment is trained too
                if not self.todo:
                    break
            time.sleep(0.2)
        if self.stopper.count:
            _stop([*self.children(), *self.evaluator.children()], self.stopper)
            return 130
        return self.finish()

    def children(self) -> list[Child]:
        return [c for group in self.running.values() for c in group]

    def poll_sweep(self, now: bool = False) -> None:
        """Queue the candidates that another command (a second launcher, refine --launch)
        recorded in sweep.json since this launcher last looked."""
        if not now and time.monotonic() - self.swept_at < SWEEP_POLL_S:
            return
        self.swept_at = time.monotonic()
        try:
            sweep = self.spec.sweep_dir.load()
        except Exception as exc:  # noqa: BLE001 - a torn read or a blip: look again later
            log.warning("could not read %s: %s", self.spec.sweep_dir.sweep_uri, exc)
            return
        for candidate in sweep.candidates if sweep else []:
            if candidate.run in self.known:
                continue
            self.known.add(candidate.run)
            if self.spec.sweep_dir.run(candidate.run).is_complete():
                log.info("%s: added to the sweep, already complete", candidate.run)
                continue
            log.info("%s: added to the sweep by another command; queued", candidate.run)
            self.todo.append(candidate)

    def start_trainers(self) -> None:
        while self.todo and len(self.running) < self.parallel:
            candidate = self.todo.popleft()
            if _trainer_live(self.spec, candidate.run):
                log.info(
                    "%s: another trainer holds it (its lease is live); waiting for that one",
                    candidate.run,
                )
                self.held[candidate.run] = candidate
                continue
            self.running[candidate.run] = [
                Child(
                    _worker_name(candidate.run, i),
                    argv,
                    worker_log(self.logs, candidate.run, i),
                    _TRAINER_NEWS,
                    niceness=TRAINER_NICENESS,
                )
                for i, argv in enumerate(trainer_commands(self.spec, candidate.lr))
            ]

    def reap_trainers(self) -> None:
        for name, group in list(self.running.items()):
            codes = [child.poll() for child in group]
            if any(code is None for code in codes):
                continue  # a run is over when every one of its workers has exited
            del self.running[name]
            self._ended(name, group, codes)

    def _ended(self, name: str, group: list[Child], codes: list[int | None]) -> None:
        code = next((c for c in codes if c), 0)  # the chief's, else the first worker's
        if self.spec.sweep_dir.run(name).is_complete():
            # Whatever the code: a trainer that found another one on its run (exit 2) and
            # waited for it sees the run complete too; nothing is left to do.
            by = "" if code == 0 else " (by another trainer)"
            log.info("%s: finished%s, exit code %d (%.0f s)", name, by, code, group[0].elapsed())
            return
        if _trainer_live(self.spec, name):
            log.info("%s: exit code %d: another trainer holds it; waiting for that one", name, code)
            self.held[name] = _candidate(self.spec, name)
            return
        self.failed[name] = code
        for child, own in zip(group, codes, strict=True):
            if own or child is group[0]:
                _report_failure(child, own or 0, "" if own else " but the run is not complete")

    def watch_held(self) -> None:
        """A run another process trains is done when it is complete; if that process went away
        before, the run is queued again (it resumes from its last checkpoint)."""
        for name, candidate in list(self.held.items()):
            if self.spec.sweep_dir.run(name).is_complete():
                log.info("%s: finished by another trainer", name)
            elif not _trainer_live(self.spec, name):
                log.info("%s: the other trainer is gone; queued again", name)
                self.todo.append(candidate)
            else:
                continue
            del self.held[name]

    def finish(self) -> int:
        """Every run is over: the exit code says how the sweep ended."""
        if self.failed:
            # The evaluator waits for every run sweep.json names, so it would wait for the
            # failed ones forever: stop it and score each run's latest checkpoint once instead.
            _stop(self.evaluator.children(), self.stopper)
            if self.stopper.count > 0:
                return 130
            if not self.evaluator.gave_up:
                once = Child(
                    "evaluator",
                    evaluator_command(self.spec, once=True),
                    os.path.join(self.logs, "evaluator.log"),
                    _EVALUATOR_NEWS,
                )
                _wait([once], self.stopper)
            failed = ", ".join(sorted(self.failed))
            log.info("%d run(s) failed: %s", len(self.failed), failed)
            return 130 if self.stopper.count else 1
        if self.evaluator.gave_up:
            return 1
        log.info("evaluator: finished, exit code 0 (%.0f s)", self.evaluator.elapsed())
        return 0


class EvaluatorKeeper:
    """The sweep's one evaluator, kept running while runs are left, as a Deployment would.

    An evaluator that exits 0 has seen every run sweep.json named finished and scored; if runs
    were added since, a new one starts at once. One that crashed (killed, out of memory, a
    bug) starts again after EVALUATOR_BACKOFF_S; after that many crashes in a row (a run of
    EVALUATOR_HEALTHY_S forgives them), one line says that the sweep goes on without it.
    """

    def __init__(self, spec: SweepSpec, logs: str) -> None:
        self.spec, self.logs = spec, logs
        self.child: Child | None = None
        self.crashes = 0
        self.not_before = 0.0  # monotonic: when the next start may happen
        self.gave_up = False
        self.done = False  # the last one exited 0 with nothing left to do
        self._start()

    def _start(self) -> None:
        self.child = self.last = Child(
            "evaluator",
            evaluator_command(self.spec),
            os.path.join(self.logs, "evaluator.log"),
            _EVALUATOR_NEWS,
        )
        self.done = False

    def children(self) -> list[Child]:
        return [self.child] if self.child is not None else []

    def elapsed(self) -> float:
        """How long the last evaluator ran."""
        return self.last.elapsed()

    def tend(self, busy: bool) -> None:
        """Look at the evaluator; start one if it is needed and due. busy: runs are left."""
        if self.gave_up:
            return
        if self.child is not None:
            code = self.child.poll()
            if code is None:
                return
            self._exited(self.child, code, busy)
            self.child = None
        if (busy or not self.done) and time.monotonic() >= self.not_before:
            self._start()

    def _exited(self, child: Child, code: int, busy: bool) -> None:
        if code == 0:
            self.done, self.crashes = True, 0
            if busy:
                log.info("evaluator: exited 0 before runs added later ended; starting it again")
            return
        if child.elapsed() >= EVALUATOR_HEALTHY_S:
            self.crashes = 0
        if self.crashes >= len(EVALUATOR_BACKOFF_S):
            _report_failure(child, code, "")
            log.error(
                "evaluator: exited non-zero %d times in a row; not restarted again: the runs "
                "go on without scores or early stopping (score them later with python -m "
                "evaluator --sweep-dir %s)",
                self.crashes + 1,
                self.spec.out,
            )
            self.gave_up = True
            return
        delay = EVALUATOR_BACKOFF_S[self.crashes]
        self.crashes += 1
        self.not_before = time.monotonic() + delay
        _report_failure(child, code, f"; restarting it in {delay:.0f} s")


def _run_names(sweep_dir: layout.SweepDir) -> list[str]:
    try:
        sweep = sweep_dir.load()
    except Exception:  # noqa: BLE001 - read again by poll_sweep, which says why
        return []
    return sweep.run_names() if sweep else []


def _candidate(spec: SweepSpec, name: str) -> layout.Candidate:
    sweep = spec.sweep_dir.load()
    return next(c for c in sweep.candidates if c.run == name)


def _trainer_live(spec: SweepSpec, run: str) -> bool:
    """Another live trainer holds the run's lease (one of another launcher, or started by hand)."""
    from launcher.status import lease_live

    return lease_live(spec.sweep_dir.run(run).lease_uri)


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
    # The evaluator's order (a top-1 tie goes to the lower loss), unscored runs last.
    ranked = sorted(rows, key=lambda r: (r.rank is None, r.rank or 0, r.run))
    print(f"leaderboard of {sweep_dir.uri}:")
    print(table(ranked))
