"""TensorFlow's own gs:// filesystem reads and writes through the emulator.

Every test here requests a GCS fixture, so the proxy variables are in place before
TensorFlow first touches gs:// (see the `gcs` fixture).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from common import records, storage
from common.storage import join

tf = pytest.importorskip("tensorflow")


def test_gfile_basics(gcs, gcs_bucket: str) -> None:  # noqa: ANN001
    before = len(gcs.proxy_log)
    with tf.io.gfile.GFile(join(gcs_bucket, "dir", "a.txt"), "w") as f:
        f.write("alpha")
    with tf.io.gfile.GFile(join(gcs_bucket, "dir", "b.txt"), "w") as f:
        f.write("beta")
    assert len(gcs.proxy_log) > before  # TensorFlow went through the proxy

    assert tf.io.gfile.exists(join(gcs_bucket, "dir", "a.txt"))
    assert not tf.io.gfile.exists(join(gcs_bucket, "dir", "zzz.txt"))
    assert tf.io.gfile.GFile(join(gcs_bucket, "dir", "a.txt")).read() == "alpha"
    assert sorted(tf.io.gfile.listdir(gcs_bucket)) == ["dir/"]
    assert sorted(tf.io.gfile.listdir(join(gcs_bucket, "dir"))) == ["a.txt", "b.txt"]
    assert sorted(tf.io.gfile.glob(join(gcs_bucket, "dir", "*.txt"))) == [
        join(gcs_bucket, "dir", "a.txt"),
        join(gcs_bucket, "dir", "b.txt"),
    ]
    assert tf.io.gfile.stat(join(gcs_bucket, "dir", "b.txt")).length == 4
    assert tf.io.gfile.isdir(join(gcs_bucket, "dir"))

    tf.io.gfile.remove(join(gcs_bucket, "dir", "a.txt"))
    assert not tf.io.gfile.exists(join(gcs_bucket, "dir", "a.txt"))
    assert storage.list_files(join(gcs_bucket, "dir")) == [join(gcs_bucket, "dir", "b.txt")]


def test_objects_cross_between_the_two_clients(gcs_bucket: str) -> None:
    big = os.urandom(24 * 1024 * 1024 + 3)  # large bodies through the proxy, both ways

    storage.write_text(join(gcs_bucket, "from-client.txt"), "written by google-cloud-storage")
    storage.write_bytes(join(gcs_bucket, "from-client.bin"), big)
    with tf.io.gfile.GFile(join(gcs_bucket, "from-client.txt")) as f:
        assert f.read() == "written by google-cloud-storage"
    with tf.io.gfile.GFile(join(gcs_bucket, "from-client.bin"), "rb") as f:
        assert f.read() == big

    with tf.io.gfile.GFile(join(gcs_bucket, "from-tf.bin"), "wb") as f:
        f.write(big[::-1])
    with tf.io.gfile.GFile(join(gcs_bucket, "from-tf.txt"), "w") as f:
        f.write("written by TensorFlow")
    assert storage.read_bytes(join(gcs_bucket, "from-tf.bin")) == big[::-1]
    assert storage.read_text(join(gcs_bucket, "from-tf.txt")) == "written by TensorFlow"

    storage.delete(join(gcs_bucket, "from-tf.txt"))
    assert not tf.io.gfile.exists(join(gcs_bucket, "from-tf.txt"))


def test_tfrecords_written_by_common_records_read_by_tf_data(gcs_bucket: str) -> None:
    expected = set()
    shards = []
    for shard in range(4):
        framed = []
        for i in range(25):
            label = shard * 100 + i
            expected.add((label, f"class-{label}"))
            example = records.image_example(
                jpeg=bytes([i]) * (1000 + i),
                height=10,
                width=20,
                filename=f"img-{label}.jpg",
                label=label,
                text=f"class-{label}",
            )
            framed.append(records.frame_record(example))
        uri = join(gcs_bucket, "data", records.shard_name(records.TRAIN, shard, 4))
        storage.write_bytes(uri, b"".join(framed))
        shards.append(uri)

    assert sorted(tf.io.gfile.glob(join(gcs_bucket, "data", "train-*"))) == shards
    spec = {
        records.KEY_LABEL: tf.io.FixedLenFeature([], tf.int64),
        records.KEY_TEXT: tf.io.FixedLenFeature([], tf.string),
        records.KEY_ENCODED: tf.io.FixedLenFeature([], tf.string),
    }
    dataset = tf.data.TFRecordDataset(shards, num_parallel_reads=4).map(
        lambda r: tf.io.parse_single_example(r, spec)
    )
    seen = set()
    for features in dataset:
        label = int(features[records.KEY_LABEL])
        seen.add((label, features[records.KEY_TEXT].numpy().decode()))
        assert len(features[records.KEY_ENCODED].numpy()) == 1000 + label % 100
    assert seen == expected


def test_checkpoint_save_and_restore(gcs_bucket: str) -> None:
    directory = join(gcs_bucket, "run", "checkpoints")
    weights = tf.Variable(tf.range(1000, dtype=tf.float32))
    step = tf.Variable(7, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(weights=weights, step=step)
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=2)
    path = manager.save()
    assert tf.train.latest_checkpoint(directory) == path
    assert storage.exists(join(directory, "checkpoint"))

    weights.assign(tf.zeros(1000))
    step.assign(0)
    tf.train.Checkpoint(weights=weights, step=step).restore(path).assert_consumed()
    assert int(step) == 7
    assert float(tf.reduce_sum(weights)) == sum(range(1000))


def test_summaries_on_gcs(gcs_bucket: str) -> None:
    logdir = join(gcs_bucket, "logs", "train")
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        for step in range(3):
            tf.summary.scalar("loss", 1.0 / (step + 1), step=step)
    writer.close()

    (events,) = tf.io.gfile.glob(join(logdir, "events.out.tfevents.*"))
    from tensorflow.core.util import event_pb2

    losses = {}
    for raw in tf.data.TFRecordDataset(events):
        event = event_pb2.Event.FromString(raw.numpy())
        for value in event.summary.value:
            losses[event.step] = float(tf.make_ndarray(value.tensor))
    assert losses == pytest.approx({0: 1.0, 1: 0.5, 2: 1 / 3})


def test_subprocess_with_the_session_environment(gcs_bucket: str) -> None:
    """A child process (as trainers run in tests) sees gs:// through os.environ alone."""
    storage.write_text(join(gcs_bucket, "in.txt"), "to the child")
    script = textwrap.dedent(
        f"""
        import tensorflow as tf
        from common import storage
        text = tf.io.gfile.GFile("{gcs_bucket}/in.txt").read()
        with tf.io.gfile.GFile("{gcs_bucket}/out.txt", "w") as f:
            f.write(text + ", and back")
        storage.write_text("{gcs_bucket}/out2.txt", storage.read_text("{gcs_bucket}/in.txt"))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        check=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert storage.read_text(join(gcs_bucket, "out.txt")) == "to the child, and back"
    assert storage.read_text(join(gcs_bucket, "out2.txt")) == "to the child"
