"""The trainer's side of early stopping, with real trainer processes on a tiny dataset.

stop.json found at a checkpoint: the trainer saves, writes complete.json with the reason (no
export) and exits 0, and a restart does nothing; stop.json already there when a trainer starts:
the same, without building a model; a loss that turns NaN or infinite stops the run at once.
"""

from __future__ import annotations

import json
import os

import pytest

from common import layout
from tests.trainer_testdata import QUICK, run_trainer, start_trainer, wait_for, write_dataset

pytest.importorskip("tensorflow")

STEPS = 400  # never reached: each test stops its trainer long before
FLAGS = [*QUICK, "--batch-size", "4", "--steps", str(STEPS), "--checkpoint-every", "3",
         "--log-every", "1", "--lease-seconds", "8"]  # fmt: skip
REQUEST = {"rule": "asha", "step": 3, "reason": "top-1 0.1000 at the rung of step 3 ranks 3 of 3"}


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:  # noqa: ANN001
    path = str(tmp_path_factory.mktemp("early-stop") / "data")
    write_dataset(path, train_per_class=8, val_per_class=2)
    return path


def test_stop_json_stops_the_trainer_at_a_checkpoint_with_exit_0(data: str, tmp_path) -> None:  # noqa: ANN001
    run_dir = str(tmp_path / "run")
    run = layout.RunDir(run_dir)
    log = str(tmp_path / "t.log")
    proc = start_trainer(data, run_dir, *FLAGS, log_path=log)
    try:
        wait_for(lambda: "saved checkpoint" in _read(log), 180, "a checkpoint", proc)
        assert run.save_stop_request(REQUEST)
        assert proc.wait(timeout=120) == 0, _read(log)
    finally:
        proc.kill()
    complete = run.complete()
    assert complete is not None, _read(log)
    assert complete["stopped"] == {"by": "evaluator", **REQUEST}
    final = complete["final_step"]
    assert 3 <= final < STEPS
    assert run.latest_checkpoint_step() == final  # it saved where it stopped
    assert not os.path.exists(run.export_dir)  # a stopped run is not exported
    assert json.loads(_read(run.lease_uri))["released"] is True
    assert f"run stopped early at step {final}: {REQUEST['reason']}" in _read(log)

    # A restarted pod (or the same command) finds the run done: exit 0, nothing trained.
    again = run_trainer(data, run_dir, *FLAGS, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stderr and "stopped early" in again.stderr
    assert run.complete() == complete


def test_stop_json_there_before_the_trainer_starts(data: str, tmp_path) -> None:  # noqa: ANN001
    """A trainer killed after the evaluator asked it to stop: its restart stops at once."""
    run_dir = str(tmp_path / "run")
    run = layout.RunDir(run_dir)
    os.makedirs(run_dir)
    run.save_stop_request(REQUEST)
    done = run_trainer(data, run_dir, *FLAGS, timeout=120)
    assert done.returncode == 0, done.stderr
    complete = run.complete()
    assert complete["stopped"]["reason"] == REQUEST["reason"] and complete["final_step"] == 0
    assert "step 1, loss" not in done.stderr


def test_a_nan_loss_stops_the_run_at_once(data: str, tmp_path) -> None:  # noqa: ANN001
    run_dir = str(tmp_path / "run")
    run = layout.RunDir(run_dir)
    flags = [*FLAGS, "--optimizer", "sgd", "--lr", "1e12", "--weight-decay", "0"]
    done = run_trainer(data, run_dir, *flags, timeout=300)
    assert done.returncode == 0, done.stderr
    complete = run.complete()
    assert complete is not None, done.stderr
    stopped = complete["stopped"]
    assert stopped["by"] == "trainer" and stopped["rule"] == "nan"
    assert stopped["step"] < 20, done.stderr  # at once, not at the end
    assert stopped["reason"] in {f"the loss is {v} at step {stopped['step']}" for v in
                                 ("nan", "inf", "-inf")}  # fmt: skip
    # Nothing non-finite was checkpointed: the last checkpoint kept is before the NaN.
    assert complete["final_step"] < stopped["step"]
    saved = run.latest_checkpoint_step()
    assert saved == (complete["final_step"] or None)
    assert not os.path.exists(run.export_dir)
