"""Several replicas, as on a multi-GPU node: MirroredStrategy over two logical CPU devices runs
the same code path (distributed input, per-replica steps, summed gradients, one step counter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.trainer_testdata import QUICK, REPO, write_dataset

tf = pytest.importorskip("tensorflow")

# Two logical CPUs must be configured before TensorFlow starts: a process of its own.
SCRIPT = textwrap.dedent(
    """
    import sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from common.cli import setup_logging
    from trainer.config import parse_args
    from trainer.loop import train
    from trainer.metrics import TrainMetrics
    from trainer.prepare import prepare
    from trainer.signals import StopRequest

    setup_logging()
    config, given = parse_args(sys.argv[1:])
    plan = prepare(config, given)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    train.run(plan, TrainMetrics(plan.run_name), StopRequest(), strategy=strategy)
    """
)


def test_two_replicas_train_to_the_exact_step(tmp_path) -> None:  # noqa: ANN001
    data, run_dir = str(tmp_path / "data"), str(tmp_path / "run")
    write_dataset(data, train_per_class=4, val_per_class=1)
    flags = [*QUICK, "--batch-size", "4", "--steps", "3", "--head-warmup-steps", "1",
             "--log-every", "1"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, "--data", data, "--run-dir", run_dir, *flags],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "float32 on CPU, 2 replicas" in result.stderr
    assert "head warm-up done at step 1" in result.stderr
    assert "step 3, loss" in result.stderr
    # One step counter for the global batch, not one per replica.
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    assert tf.train.load_checkpoint(latest).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 3
    with open(os.path.join(run_dir, "complete.json")) as f:
        assert json.load(f)["final_step"] == 3
    assert os.path.exists(os.path.join(run_dir, "export", "saved_model.pb"))
