"""One writer per run dir, and restarts that never loop: real trainer processes.

A second trainer on a running run is refused naming the first; SIGTERM under a Job's exit
code stops with that code; a trainer whose lease was taken stops without writing; a damaged
newest checkpoint falls back to the one before; a complete run is reported, exit 0.
"""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from common import layout
from tests.trainer_testdata import (
    QUICK,
    error_lines,
    run_trainer,
    start_trainer,
    wait_for,
    write_dataset,
)

pytest.importorskip("tensorflow")

STEPS = 20
FLAGS = [*QUICK, "--batch-size", "4", "--steps", str(STEPS), "--checkpoint-every", "5",
         "--log-every", "1", "--lease-seconds", "8"]  # fmt: skip


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:  # noqa: ANN001
    path = str(tmp_path_factory.mktemp("lease") / "data")
    write_dataset(path, train_per_class=8, val_per_class=2)
    return path


def test_second_trainer_is_refused_then_sigterm_exits_with_the_jobs_code_then_resume(
    data: str,
    tmp_path,  # noqa: ANN001
) -> None:
    run_dir = str(tmp_path / "run")
    lease_uri = layout.RunDir(run_dir).lease_uri
    log1 = str(tmp_path / "1.log")
    first = start_trainer(data, run_dir, *FLAGS, "--exit-code-on-stop", "143", log_path=log1)
    try:
        wait_for(lambda: "step 2, loss" in _read(log1), 180, "step 2", first)
        second = run_trainer(data, run_dir, *FLAGS, timeout=120)
        assert second.returncode == 2, second.stderr
        (line,) = error_lines(second.stderr)
        assert line.startswith(f"error: another trainer holds {lease_uri} (host ")
        assert f"pid {first.pid}, since " in line
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 143, _read(log1)  # a Job must not count it done
    finally:
        first.kill()
    assert json.loads(_read(lease_uri))["released"] is True
    assert not os.path.exists(os.path.join(run_dir, "complete.json"))

    # The lease was released: the same command resumes at once (and stops again, exit 0).
    log2 = str(tmp_path / "2.log")
    resumed = start_trainer(data, run_dir, *FLAGS, log_path=log2)
    try:
        wait_for(lambda: "resumed from checkpoint at step" in _read(log2), 120, "resume", resumed)
        resumed.send_signal(signal.SIGTERM)
        assert resumed.wait(timeout=60) == 0, _read(log2)
    finally:
        resumed.kill()


def test_a_trainer_that_lost_its_lease_stops_without_writing(data: str, tmp_path) -> None:  # noqa: ANN001
    run_dir = str(tmp_path / "run")
    lease_uri = layout.RunDir(run_dir).lease_uri
    log = str(tmp_path / "t.log")
    proc = start_trainer(data, run_dir, *FLAGS, log_path=log)
    try:
        wait_for(lambda: "saved checkpoint" in _read(log), 180, "a checkpoint", proc)
        # Another trainer took the run over (this one looked dead to it, say a frozen node).
        record = {"role": "trainer", "token": "theirs", "host": "elsewhere", "pid": 1,
                  "since": "now", "renewed": 0, "ttl_s": 8}  # fmt: skip
        with open(lease_uri, "w") as f:
            json.dump(record, f)
        assert proc.wait(timeout=120) == 2, _read(log)
    finally:
        proc.kill()
    said = [line for line in _read(log).splitlines() if line.startswith("error: ")]
    assert said and "lost its lease" in said[-1] and "host elsewhere" in said[-1]
    assert "stops without writing" in said[-1]
    assert not os.path.exists(os.path.join(run_dir, "complete.json"))
    assert json.loads(_read(lease_uri))["token"] == "theirs"  # not released over theirs


def test_a_shard_damaged_inside_is_named_and_fails_at_once(tmp_path) -> None:  # noqa: ANN001
    _damaged_shard_is_named(tmp_path, *FLAGS)


def test_a_shard_damaged_inside_is_named_when_the_head_fit_reads_it(
    tmp_path, imagenet_weights: str
) -> None:  # noqa: ANN001
    """From ImageNet weights the head fit reads the training split before the first step."""
    _damaged_shard_is_named(tmp_path, *FLAGS, "--weights", imagenet_weights)


def _damaged_shard_is_named(tmp_path, *flags: str) -> None:  # noqa: ANN001
    data = str(tmp_path / "data")
    write_dataset(data, train_per_class=8, val_per_class=2, train_shards=1)
    shard = os.path.join(data, "train-00000-of-00001")
    with open(shard, "r+b") as f:  # same size (so the size check passes), flipped bytes
        f.seek(os.path.getsize(shard) // 2)
        f.write(b"\xff" * 64)
    done = run_trainer(data, str(tmp_path / "run"), *flags)
    assert done.returncode == 2, done.stderr  # a Job fails at once instead of retrying forever
    assert "Traceback" not in done.stderr
    (line,) = [line for line in error_lines(done.stderr) if line.startswith("error: ")]
    assert line.startswith(f"error: the shard {shard} is damaged (")
    assert line.endswith("rerun preprocess or copy the dataset again.")


def test_a_damaged_newest_checkpoint_falls_back_and_leftovers_are_removed(
    data: str,
    tmp_path,  # noqa: ANN001
) -> None:
    run_dir = str(tmp_path / "run")
    checkpoints = os.path.join(run_dir, "checkpoints")
    log1 = str(tmp_path / "1.log")
    first = start_trainer(data, run_dir, *FLAGS, log_path=log1)
    try:
        wait_for(lambda: "ckpt-10 (" in _read(log1), 180, "the step-10 checkpoint", first)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0, _read(log1)
    finally:
        first.kill()
    steps = sorted(int(m.group(1)) for n in os.listdir(checkpoints)
                   if (m := re.match(r"ckpt-(\d+)\.index$", n)))  # fmt: skip
    newest, before = steps[-1], steps[-2]
    with open(os.path.join(checkpoints, f"ckpt-{newest}.index"), "r+b") as f:
        f.truncate(10)  # "not an sstable": the restart loop this must not become
    os.makedirs(os.path.join(checkpoints, "ckpt-99_temp"))  # a killed save's folder

    log2 = str(tmp_path / "2.log")
    second = start_trainer(data, run_dir, *FLAGS, log_path=log2)
    try:
        wait_for(lambda: f"step {before + 1}, loss" in _read(log2), 180, "a step", second)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0, _read(log2)
    finally:
        second.kill()
    said = _read(log2)
    assert re.search(rf"cannot restore \S+ckpt-{newest} \(", said)
    assert re.search(rf"resuming from \S+ckpt-{before}, the newest checkpoint that restores", said)
    assert re.search(r"removed \S+ckpt-99_temp, left by a save that was stopped", said)
    assert not os.path.exists(os.path.join(checkpoints, "ckpt-99_temp"))
