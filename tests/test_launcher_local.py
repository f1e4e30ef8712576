"""The local backend end to end: a real 3-lr sweep of real trainers and a real evaluator.

One scenario, in the order a user lives it (TensorFlow on 2 cores is slow, so it is shared):
start a sweep, press Ctrl-C once a checkpoint exists (every child stops cleanly, exit 130),
run the same command again and SIGKILL that launcher (its children end with it), run it again
(the stopped runs resume; its evaluator, killed, is restarted; a second launcher on the same
--out adds an lr and leaves the training to the first, --parallel holding across both; both
exit 0 once the sweep is finished and every run scored, the leaderboard printed), and once
more (nothing is retrained). Tiny runs: 75-pixel images, random weights, the head only, 16
steps.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from common import layout
from tests.trainer_testdata import REPO, write_dataset

pytest.importorskip("tensorflow")

LRS = "0.1,0.01,0.001"
# The head alone steps in about 0.04 s: 8 steps between the first checkpoint and the end.
FLAGS = ["--steps", "16", "--batch-size", "4", "--image-size", "75", "--weights", "none",
         "--fine-tune", "head", "--checkpoint-every", "8"]  # fmt: skip


def command(data: str, out: str, *extra: str, lrs: str = LRS) -> list[str]:
    return [sys.executable, "-m", "launcher", "sweep", "--data", data, "--out", out,
            "--lrs", lrs, "--parallel", "3", *FLAGS, *extra]  # fmt: skip


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )


def wait_until(condition, timeout: float, what: str, *procs: subprocess.Popen) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            assert proc.poll() is None, (what, proc.communicate())
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def run(argv: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("local-sweep") / "colours")
    write_dataset(path, train_per_class=4, val_per_class=2, train_shards=1, size=80)
    return path


def _children(out: str, app: str) -> list[int]:
    """Pids of the running `python -m <app>` processes whose command line names `out`."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except (OSError, ValueError):
            continue  # not a process, or gone
        if "-m" in argv and app in argv and any(out in arg for arg in argv):
            pids.append(int(entry))
    return pids


def _sigint_pending(pid: int) -> bool:
    """Whether a SIGINT waits for the (stopped) process: /proc's pending-signal masks."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
    return bool(pending & (1 << (signal.SIGINT - 1)))


def test_stop_resume_finish_and_rerun(data: str, tmp_path) -> None:  # noqa: ANN001
    out = str(tmp_path / "sweeps" / "colours")
    sweep_dir = layout.SweepDir(out)

    # 1. Ctrl-C once some run has a checkpoint: every child stops, exit 130.
    proc = subprocess.Popen(
        command(data, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    deadline = time.monotonic() + 600
    while not glob.glob(os.path.join(out, "runs", "*", "checkpoints", "ckpt-*.index")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.1)
    # Frozen where they are, the trainers cannot finish before the launcher's SIGINT reaches
    # them, however fast the machine (CI once saw all three 4-step runs finish first).
    trainers, evaluators = _children(out, "trainer"), _children(out, "evaluator")
    assert trainers and len(evaluators) == 1
    for pid in trainers:
        os.kill(pid, signal.SIGSTOP)
    try:
        # The evaluator, sharing the cores with every trainer, comes first for the CPU.
        evaluator_niceness = os.getpriority(os.PRIO_PROCESS, evaluators[0])
        for pid in trainers:  # Linux clamps niceness at 19
            assert os.getpriority(os.PRIO_PROCESS, pid) == min(evaluator_niceness + 10, 19)
        proc.send_signal(signal.SIGINT)
        wait_until(lambda: all(_sigint_pending(pid) for pid in trainers), 60,
                   "the launcher's SIGINT to every trainer", proc)  # fmt: skip
    finally:
        for pid in trainers:  # each stops after the step it was in
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "stopped; the same command resumes the sweep" in stderr
    assert "stopped, exit code" in stderr
    assert sweep_dir.load().run_names() == ["lr-0.1", "lr-0.01", "lr-0.001"]
    assert not all(run.is_complete() for run in sweep_dir.runs())
    for name in ("lr-0.1", "lr-0.01", "lr-0.001", "evaluator"):
        assert os.path.exists(os.path.join(out, "logs", f"{name}.log"))

    # 2. The same command again, SIGKILLed once its children run: they end with it (Linux's
    # parent-death signal), none trains on with its output going nowhere.
    killed = start(command(data, out))
    wait_until(
        lambda: _children(out, "trainer") and _children(out, "evaluator"),
        300, "trainers and the evaluator", killed,
    )  # fmt: skip
    killed.kill()
    killed.communicate()
    wait_until(
        lambda: not _children(out, "trainer") and not _children(out, "evaluator"),
        120, "the killed launcher's children to end",
    )  # fmt: skip

    # 3. Again: runs resume, the sweep finishes, the leaderboard is printed. Meanwhile its
    # evaluator is SIGKILLed (it is restarted and scores on), and a second launcher on the same
    # --out adds lr 0.05: it leaves the training to this one, which queues the new run.
    proc = start(command(data, out))
    trainers_at_once = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            trainers_at_once.append(len(_children(out, "trainer")))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wait_until(lambda: _children(out, "evaluator"), 300, "the evaluator", proc)
    os.kill(_children(out, "evaluator")[0], signal.SIGKILL)
    second = start(command(data, out, lrs=LRS + ",0.05"))
    stdout, stderr = proc.communicate(timeout=900)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    second_out, second_err = second.communicate(timeout=600)
    sampling.set()
    sampler.join()
    assert done.returncode == 0, done.stderr[-3000:]
    assert second.returncode == 0, second_err[-3000:]
    assert "another launcher runs this sweep" in second_err
    assert "lr-0.05: started" not in second_err  # it trained nothing itself
    assert "lr-0.05: added to the sweep by another command; queued" in done.stderr
    assert "evaluator: failed, exit code -9; restarting it in 5 s" in done.stderr
    assert max(trainers_at_once) <= 3, trainers_at_once  # --parallel 3, across both launchers
    names = ("lr-0.1", "lr-0.01", "lr-0.001", "lr-0.05")
    assert all(sweep_dir.run(name).is_complete() for name in names)
    assert "resumed from checkpoint" in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"leaderboard of {out}:"
    table = lines[1:6]
    assert table[0].split() == ["run", "lr", "state", "step", "loss", "best", "top-1", "at", "step",
                                "complete", "eval", "lag", "why", "stopped"]  # fmt: skip
    assert sum(line.startswith("*") for line in table[1:]) == 1
    complete_at = table[0].index("complete")  # the column, whatever follows it
    assert {line[complete_at:].split()[0] for line in table[1:]} == {"yes"}
    assert f"TensorBoard: tensorboard --logdir {out}" in done.stdout
    assert f"leaderboard of {out}:" in second_out
    board = sweep_dir.leaderboard()
    assert {row["run"]: row["last_step"] for row in board["runs"]} == dict.fromkeys(names, 16)

    # 3. Once more: nothing is retrained.
    again = run(command(data, out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("already complete, not retrained") == 4
    assert "-m trainer" not in again.stderr and "lr-0.1: started" not in again.stderr
    assert "leaderboard of" in again.stdout

    # status reads the same from the bucket.
    status = run([sys.executable, "-m", "launcher", "status", "--sweep", out])
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("complete") >= 3 and "16/16" in status.stdout


def test_a_failing_run_is_reported(data: str, tmp_path) -> None:  # noqa: ANN001
    out = str(tmp_path / "sweeps" / "broken")
    run_dir = layout.SweepDir(out).run("lr-0.5")
    os.makedirs(run_dir.uri)
    with open(run_dir.hparams_uri, "w") as f:
        f.write("{not json")
    argv = [sys.executable, "-m", "launcher", "sweep", "--data", data, "--out", out,
            "--lrs", "0.5", *FLAGS]  # fmt: skip
    done = run(argv)
    assert done.returncode == 1
    assert "lr-0.5: failed, exit code 2; last lines of" in done.stderr
    assert "is not valid JSON" in done.stderr
    assert "1 run(s) failed: lr-0.5" in done.stderr
