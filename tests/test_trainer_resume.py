"""Never lose a run: SIGTERM saves and exits 0; SIGKILL loses only the steps since the last
checkpoint; a restart resumes from the latest checkpoint and ends at exactly the asked step.

One run directory through three real processes (about 60 s): stopped by SIGTERM, killed by
SIGKILL, then finished. The whole network trains (--fine-tune all) to cover the full step.
"""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from tests.trainer_testdata import QUICK, run_trainer, start_trainer, wait_for, write_dataset

tf = pytest.importorskip("tensorflow")

STEPS = 24
FLAGS = [
    *QUICK,
    "--fine-tune", "all",
    "--batch-size", "4",
    "--steps", str(STEPS),
    "--checkpoint-every", "6",
    "--log-every", "2",
]  # fmt: skip


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _checkpoint_steps(run_dir: str) -> list[int]:
    names = os.listdir(os.path.join(run_dir, "checkpoints"))
    return sorted({int(m.group(1)) for n in names if (m := re.match(r"ckpt-(\d+)\.index$", n))})


def _latest_step(run_dir: str) -> int:
    """The step of the checkpoint the state file names (0 before the first)."""
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def _saved_step(run_dir: str) -> int:
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    return int(tf.train.load_checkpoint(latest).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


def test_sigterm_then_sigkill_then_resume_to_the_exact_step(tmp_path) -> None:  # noqa: ANN001
    data, run_dir = str(tmp_path / "data"), str(tmp_path / "run")
    write_dataset(data, train_per_class=8, val_per_class=2)

    # 1. SIGTERM mid-run (what Kubernetes sends on eviction): checkpoint, exit 0.
    log1 = str(tmp_path / "1.log")
    proc = start_trainer(data, run_dir, *FLAGS, log_path=log1)
    wait_for(lambda: "step 4, loss" in _read(log1), 180, "step 4", proc)
    hparams_before = _read(os.path.join(run_dir, "hparams.json"))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, _read(log1)
    stopped = int(re.search(r"stopped at step (\d+) of 24 \(SIGTERM\)", _read(log1)).group(1))
    assert 4 <= stopped < STEPS
    assert _saved_step(run_dir) == stopped  # the stop itself saved, between scheduled saves
    assert not os.path.exists(os.path.join(run_dir, "complete.json"))

    # 2. Resume, then SIGKILL (no chance to save) after the checkpoint at step 12.
    log2 = str(tmp_path / "2.log")
    proc = start_trainer(data, run_dir, *FLAGS, log_path=log2)
    # The checkpoint state file, written after the checkpoint's own files, is what makes step
    # 12 the one to resume from: a kill between the two resumes from the one before.
    wait_for(lambda: _latest_step(run_dir) >= 12, 180, "the checkpoint at step 12", proc)
    proc.kill()
    proc.wait(timeout=30)
    log = _read(log2)
    assert f"resumed from checkpoint at step {stopped} of 24" in log
    assert re.search(rf"step {stopped + 2 - stopped % 2}, loss", log)  # counting on, not over
    killed_at = _saved_step(run_dir)
    assert 12 <= killed_at < STEPS
    assert not os.path.exists(os.path.join(run_dir, "complete.json"))

    # 3. The same command again finishes the run at exactly the asked step.
    result = run_trainer(data, run_dir, *FLAGS)
    assert result.returncode == 0, result.stderr
    assert f"resumed from checkpoint at step {killed_at} of 24" in result.stderr
    assert "step 24, loss" in result.stderr
    assert "step 26" not in result.stderr
    assert _saved_step(run_dir) == STEPS
    with open(os.path.join(run_dir, "complete.json")) as f:
        assert json.load(f)["final_step"] == STEPS
    assert _read(os.path.join(run_dir, "hparams.json")) == hparams_before
    # Scheduled saves every 6 steps (by one process or the next), plus the one SIGTERM made.
    assert _checkpoint_steps(run_dir) == sorted({6, stopped, 12, 18, 24})
