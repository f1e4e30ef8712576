"""A run with everything in a bucket: dataset, backbone weights file and run directory on gs://,
against fake-gcs-server, with TensorFlow's own GCS client doing the training-side I/O
(tf.data, checkpoints, summaries, SavedModel) and google-cloud-storage the rest."""

from __future__ import annotations

import os

import pytest

from common import storage
from tests.trainer_testdata import run_trainer, write_dataset

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

# Keras 3.15 calls np.array(tensor) with NumPy 2's copy keyword unsupported: harmless, noisy.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def test_training_from_and_to_a_bucket(gcs, gcs_bucket: str, tmp_path) -> None:  # noqa: ANN001
    from common import model

    data = storage.join(gcs_bucket, "datasets", "colours")
    write_dataset(data, train_per_class=4, val_per_class=1)
    # Stands in for Keras' ImageNet file, put in the bucket for a cluster without internet.
    local_weights = str(tmp_path / "backbone.weights.h5")
    backbone = model.backbone_of(model.build_classifier(3, 75))
    backbone.save_weights(local_weights)
    weights = storage.join(gcs_bucket, "weights", "backbone.weights.h5")
    storage.upload_file(local_weights, weights)
    run_dir = storage.join(gcs_bucket, "sweeps", "s1", "runs", "lr-0.01")
    before = len(gcs.proxy_log)

    result = run_trainer(
        data, run_dir,
        "--image-size", "75", "--weights", weights, "--fine-tune", "head", "--lr", "0.01",
        "--batch-size", "4", "--steps", "6", "--checkpoint-every", "3", "--log-every", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"copied --weights {weights}" in result.stderr
    assert len(gcs.proxy_log) > before  # TensorFlow's gs:// went through the emulator

    assert storage.read_json(storage.join(run_dir, "hparams.json"))["weights"] == weights
    assert storage.read_json(storage.join(run_dir, "complete.json"))["final_step"] == 6
    names = {storage.basename(u) for u in storage.list_files(storage.join(run_dir, "checkpoints"))}
    assert {"checkpoint", "ckpt-3.index", "ckpt-6.index"} <= names
    assert storage.list_files(storage.join(run_dir, "train"))  # event files
    assert storage.exists(storage.join(run_dir, "export", "saved_model.pb"))
    assert storage.read_text(storage.join(run_dir, "export", "labels.txt")).split() == [
        "red",
        "green",
        "blue",
    ]

    # The bucket's checkpoint restores into the evaluator's model; the backbone is the file's.
    net = model.build_classifier(3, 75)
    tf.train.Checkpoint(model=net).read(
        storage.join(run_dir, "checkpoints", "ckpt-6")
    ).expect_partial()
    for got, want in zip(model.backbone_of(net).get_weights(), backbone.get_weights(), strict=True):
        assert (got == want).all()
    assert (
        os.path.basename(tf.train.latest_checkpoint(storage.join(run_dir, "checkpoints")))
        == "ckpt-6"
    )
