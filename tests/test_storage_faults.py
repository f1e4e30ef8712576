"""What a flaky, lost or full storage does: retried, bounded in time, said in one sentence.

GCS faults come from a fault-injecting proxy in front of the real emulator (tests/faulty_gcs.py);
a full disk is a small tmpfs filled to the brim (root only; skipped elsewhere).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from common import storage
from common.cli import RetryableError, run_main
from tests.faulty_gcs import FaultyGcs


@pytest.fixture
def faulty(gcs, monkeypatch) -> Iterator[FaultyGcs]:  # noqa: ANN001
    """common.storage (here and in subprocesses) through the proxy, with a short deadline."""
    with FaultyGcs(gcs.url) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        monkeypatch.setenv(storage.DEADLINE_ENV, "3")
        yield proxy


def _record_sweep(out: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """The trainer pod's init container, as it runs there."""
    argv = ["record-sweep", "--out", out, "--data", "gs://b/d", "--name", "s", "--lrs", "0.5",
            "--steps", "4"]  # fmt: skip
    return subprocess.run([sys.executable, "-m", "launcher", *argv], capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())  # fmt: skip


def _one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return errors[0]


# ---------------------------------------------------------------- 2: an outage


@pytest.mark.parametrize("mode", ["reset", "503"])
def test_outage_is_retried_then_exit_1_in_one_sentence(gcs, faulty, mode: str) -> None:  # noqa: ANN001
    """An outage longer than the deadline: exit 1 (a retry can fix it, so a Job is not failed
    for good, as with exit 2), with one sentence naming the object, not a tuple's repr."""
    out = gcs.make_bucket() + "/sweeps/s"
    faulty.outage(mode)
    started = time.monotonic()
    result = _record_sweep(out)
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 30
    line = _one_sentence(result.stderr)
    assert f"{out}/sweep.json" in line and "a later attempt may succeed" in line, line
    assert "('" not in line, line
    assert len(faulty.requests) > 2, "never retried"


def test_short_outage_is_ridden_out(gcs, faulty, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv(storage.DEADLINE_ENV, "30")
    out = gcs.make_bucket() + "/sweeps/s"
    faulty.outage("reset", seconds=2.0)
    result = _record_sweep(out)
    assert result.returncode == 0, result.stderr
    faulty.heal()
    assert [c["run"] for c in storage.read_json(out + "/sweep.json")["candidates"]] == ["lr-0.5"]


def test_create_only_write_whose_answer_is_lost_succeeds(gcs, faulty) -> None:  # noqa: ANN001
    """The create landed, the retry's precondition fails against it: that is success."""
    uri = gcs.make_bucket() + "/run/stop.json"
    faulty.lose_replies(lambda method, target: method == "POST")
    storage.write_bytes(uri, b"mine", if_absent=True)
    assert faulty.lost
    assert storage.read_bytes(uri) == b"mine"
    with pytest.raises(FileExistsError):  # someone else's create is still refused
        storage.write_bytes(uri, b"other", if_absent=True)


# ---------------------------------------------------------------- 3: a bucket gone for good


def test_silent_bucket_is_an_error_within_the_deadline(gcs, faulty) -> None:  # noqa: ANN001
    """A bucket behind a black hole (requests accepted, never answered): every call of
    common.storage, the lease's check among them, gives up within its deadline, in a sentence."""
    from common.lease import Lease

    uri = gcs.make_bucket() + "/run/trainer.lease.json"
    lease = Lease(uri, role="trainer", ttl_s=60)
    lease.acquire(wait_s=0)
    faulty.outage("silent")
    for call in (lease.check, lambda: storage.list_files(uri.rsplit("/", 1)[0]),
                 lambda: storage.write_json(uri + ".x", {"a": 1})):  # fmt: skip
        started = time.monotonic()
        with pytest.raises(storage.StorageUnavailable, match="a later attempt may succeed"):
            call()
        assert time.monotonic() - started < 12  # deadline 3 s, plus one request's timeout
    lease._stop.set()  # its renewals would only warn now


_SAVE_TO_A_LOST_BUCKET = """
import os, socket, sys, time
with socket.socket() as s:  # a port nobody listens on: the bucket's endpoint is gone
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
os.environ.update(https_proxy=f"http://127.0.0.1:{port}", http_proxy=f"http://127.0.0.1:{port}")
from trainer.__main__ import main
try:
    main(["--data", "/nonexistent", "--run-dir", "/nonexistent"])  # sets the bounds, then refuses
except BaseException:
    pass
import tensorflow as tf
from trainer.checkpointing import Checkpointer
from trainer.metrics import TrainMetrics
checkpoint = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0]))
saver = Checkpointer("gs://lost-bucket/run/checkpoints", checkpoint, keep=2, every_steps=1,
                     every_minutes=60, metrics=TrainMetrics("run"))
started = time.monotonic()
try:
    saver.save(7)
except Exception as exc:
    print(type(exc).__name__, round(time.monotonic() - started, 1), exc, sep="|")
"""


def test_checkpoint_save_to_a_lost_bucket_is_bounded_and_said() -> None:
    """TensorFlow's own gs:// under the trainer's bounds: about 15 s of retries, then one
    sentence (StorageUnavailable: exit 1), not minutes of silence (its defaults: 10 retries up
    to 32 s apart). A subprocess: TensorFlow reads the bounds once, at its first gs:// use."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCS_")}
    env.update(GOOGLE_AUTH_TOKEN_FOR_TESTING="x", NO_GCE_CHECK="true", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", _SAVE_TO_A_LOST_BUCKET], capture_output=True,
                            text=True, timeout=180, env=env)  # fmt: skip
    kind, seconds, message = result.stdout.strip().splitlines()[-1].split("|")
    assert kind == "StorageUnavailable", result.stdout + result.stderr
    assert float(seconds) < 40
    assert message.startswith("could not save the checkpoint of step 7 to gs://lost-bucket/run/")
    assert "resumes from its last checkpoint" in message and "\n" not in message


def test_the_evaluator_bounds_tensorflow_gcs_too(monkeypatch) -> None:  # noqa: ANN001
    from evaluator.cli import main

    for name in storage.TENSORFLOW_GCS_BOUNDS:
        monkeypatch.setenv(name, "")  # so that monkeypatch restores what was there
        monkeypatch.delenv(name)
    with pytest.raises(Exception, match="does not exist"):  # refused, after setting the bounds
        main(["--run-dir", "/nonexistent/run", "--once"])
    for name, value in storage.TENSORFLOW_GCS_BOUNDS.items():
        assert os.environ[name] == value


# ---------------------------------------------------------------- 15: a full disk


@pytest.fixture
def full_disk(tmp_path) -> Iterator[str]:  # noqa: ANN001
    """A folder on a 256 KiB tmpfs filled to the last byte (root only: skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with open(mount / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:  # until it is full
                f.write(b"\0" * 4096)
        yield str(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _disk_full_sentence(exc: BaseException, where: str) -> None:
    assert isinstance(exc, storage.DiskFull) and isinstance(exc, RetryableError)
    message = str(exc)
    assert message.startswith("the disk is full (no space left on device) writing "), message
    assert where in message and "\n" not in message


def test_dataset_json_on_a_full_disk_is_one_sentence(full_disk: str, capsys) -> None:  # noqa: ANN001
    from common import manifest

    dataset = os.path.join(full_disk, "datasets", "d")
    os.makedirs(dataset)
    info = manifest.Manifest("d", ["cat", "dog"] * 2000, {})  # larger than what is left
    with pytest.raises(storage.DiskFull) as caught:
        manifest.save(dataset, info)
    _disk_full_sentence(caught.value, dataset)
    assert not [n for n in os.listdir(dataset) if n.endswith(".tmp")]  # nothing half-written

    def preprocess_main(argv: list[str] | None) -> int:
        manifest.save(dataset, info)
        return 0

    assert run_main(preprocess_main, []) == 1  # a retry after freeing space works: not 2
    assert capsys.readouterr().err.startswith("error: the disk is full")


def test_export_on_a_full_disk_is_one_sentence(full_disk: str) -> None:
    import keras

    from common.export import export_model

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2000), keras.layers.Dense(2)])  # fmt: skip
    out = os.path.join(full_disk, "runs", "r", "export")
    with pytest.raises(storage.DiskFull) as caught:
        export_model(model, ["a", "b"], 8, out)
    _disk_full_sentence(caught.value, out)


def test_checkpoint_on_a_full_disk_says_the_disk_not_memory(full_disk: str) -> None:
    """TensorFlow raises ResourceExhaustedError for ENOSPC as for memory: the message tells."""
    from types import SimpleNamespace

    import tensorflow as tf

    from trainer.loop.train import resource_exhausted

    run_dir = os.path.join(full_disk, "runs", "lr-0.1")
    checkpoint = tf.train.Checkpoint(v=tf.Variable(tf.zeros([100_000])))
    with pytest.raises(tf.errors.ResourceExhaustedError) as caught:
        tf.train.CheckpointManager(checkpoint, run_dir + "/checkpoints", max_to_keep=2).save(1)
    config = SimpleNamespace(run_dir=run_dir, batch_size=32, image_size=299)
    _disk_full_sentence(resource_exhausted(caught.value, config), run_dir)
    oom = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor [32,299,299,3]")
    said = str(resource_exhausted(oom, config))
    assert said.startswith("out of memory with --batch-size 32") and "smaller batch" in said
