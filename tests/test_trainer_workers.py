"""One run across two worker processes (MultiWorkerMirroredStrategy on 127.0.0.1), as the
launcher starts them and as an Indexed Job's pods run: the chief alone writes the run dir, the
loss follows a single process's on the same global batch, a SIGTERM to the other worker stops
both at one saved step, and the same two commands resume the run to its exact end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess

import pytest

from tests.trainer_testdata import (
    QUICK,
    free_port,
    run_trainer,
    start_trainer,
    wait_for,
    write_dataset,
)

tf = pytest.importorskip("tensorflow")

STEPS = 120  # steps take a fraction of a second: the stop must come well before the end
TRAINING = [
    *QUICK,
    "--fine-tune", "head",
    # What makes a random backbone's tiny features learnable in a few steps (test_trainer_run).
    "--optimizer", "adam",
    "--lr", "0.5",
    "--weight-decay", "0",
    "--batch-size", "8",  # the global batch: 4 per worker
    "--log-every", "2",
]  # fmt: skip
FLAGS = [*TRAINING, "--steps", str(STEPS), "--checkpoint-every", "40",
         "--exit-code-on-stop", "143"]  # fmt: skip
LOSS = re.compile(r"step (\d+), loss = (\d+\.\d\d)")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _losses(log: str) -> dict[int, float]:
    return {int(step): float(loss) for step, loss in LOSS.findall(log)}


def _start_workers(data: str, run_dir: str, logs: list[str]) -> list[subprocess.Popen]:
    hosts = ",".join(f"127.0.0.1:{free_port()}" for _ in logs)
    workers = [*FLAGS, "--workers", str(len(logs)), "--worker-hosts", hosts]
    return [
        start_trainer(data, run_dir, *workers, "--worker-index", str(i), log_path=log)
        for i, log in enumerate(logs)
    ]


# Local addresses as /proc/net/tcp and tcp6 write them: 127.0.0.1, and ::ffff:127.0.0.1.
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}


def _listening(pid: int) -> list[str]:
    """The local addresses (hex, as /proc/net/tcp* write them) of every listening TCP socket
    that process `pid` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.read().splitlines()[1:]:
                cells = line.split()
                if cells[3] == "0A" and cells[9] in inodes:  # 0A: LISTEN
                    found.append(cells[1].split(":")[0])
    return found


def _saved_step(run_dir: str) -> int:
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    return int(tf.train.load_checkpoint(latest).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


def test_two_workers_write_once_follow_one_process_stop_together_and_resume(tmp_path) -> None:  # noqa: ANN001
    data = str(tmp_path / "data")
    write_dataset(data, train_per_class=8, val_per_class=2)

    # The reference: one process, the same global batch and steps.
    alone = run_trainer(data, str(tmp_path / "alone"), *TRAINING, "--steps", str(STEPS))
    assert alone.returncode == 0, alone.stderr
    reference = _losses(alone.stderr)

    # 1. Two workers; SIGTERM to the one that is not the chief once the chief has logged step 2.
    run_dir = str(tmp_path / "run")
    logs = [str(tmp_path / "chief-1.log"), str(tmp_path / "worker-1.log")]
    chief, worker = _start_workers(data, run_dir, logs)
    wait_for(lambda: "step 2, loss" in _read(logs[0]), 240, "the chief's step 2", chief)
    # Every worker is on 127.0.0.1: TensorFlow's gRPC server (no authentication) listens there
    # only, not on every interface as it does by default.
    for proc in (chief, worker):
        addresses = _listening(proc.pid)
        assert addresses and set(addresses) <= LOOPBACK, addresses
    worker.send_signal(signal.SIGTERM)
    # Both stop at the same step, save it (the chief into the run dir), and exit as a stopped
    # pod does (143: the Job restarts them; never counted as a failure).
    assert worker.wait(timeout=120) == 143, _read(logs[1])
    assert chief.wait(timeout=120) == 143, _read(logs[0])
    stopped = int(re.search(r"stopped at step (\d+) of 120: another worker", _read(logs[0]))[1])
    assert f"stopped at step {stopped} of 120 (SIGTERM)" in _read(logs[1])
    assert _saved_step(run_dir) == stopped
    assert not os.path.exists(os.path.join(run_dir, "complete.json"))

    # The chief logs the classic lines, the other worker none.
    assert "(chief 0 of 2 workers)" in _read(logs[0])
    assert _losses(_read(logs[1])) == {}

    # 2. The same two commands: resumed at the saved step, finished at exactly step 120.
    logs = [str(tmp_path / "chief-2.log"), str(tmp_path / "worker-2.log")]
    procs = _start_workers(data, run_dir, logs)
    assert [p.wait(timeout=300) for p in procs] == [0, 0], _read(logs[0]) + _read(logs[1])
    assert f"resumed from checkpoint at step {stopped} of 120" in _read(logs[0])
    assert "step 120, loss" in _read(logs[0]) and "step 122" not in _read(logs[0])
    assert "run ended at step 120: the chief marks it" in _read(logs[1])
    # The loss follows the single process's: other crops and another split of the examples
    # per step, but the same gradient (the mean over the global batch) and the same descent.
    losses = {**_losses(_read(str(tmp_path / "chief-1.log"))), **_losses(_read(logs[0]))}
    def mean(of: dict[int, float], steps: range) -> float:
        return sum(of[s] for s in steps) / len(steps)

    early, late = range(2, 21, 2), range(62, STEPS + 1, 2)
    assert mean(losses, late) < mean(losses, early) - 0.1, losses  # it learns (1.14 -> 0.87 seen)
    assert mean(losses, late) == pytest.approx(mean(reference, late), rel=0.2), (losses, reference)
    with open(os.path.join(run_dir, "complete.json")) as f:
        assert json.load(f)["final_step"] == STEPS
    assert _saved_step(run_dir) == STEPS

    # Written once, by the chief: one writer's files, one events file per start of the chief.
    names = sorted(os.listdir(run_dir))
    hparams_events = [n for n in names if n.startswith("events.out.tfevents.")]
    assert len(hparams_events) == 1  # the HParams record, once
    assert [n for n in names if n not in hparams_events] == [
        ".trainer.lease.json.lock", "checkpoints", "complete.json", "export", "hparams.json",
        "train", "trainer.lease.json",
    ]  # fmt: skip
    assert len(os.listdir(os.path.join(run_dir, "train"))) == 2
    names = os.listdir(os.path.join(run_dir, "checkpoints"))
    assert sorted(int(n[5:-6]) for n in names if n.endswith(".index")) == sorted(
        {stopped, 40, 80, 120}
    )
