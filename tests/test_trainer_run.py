"""One real training run on CPU, checked from every side a user or the evaluator sees.

The run (module-scoped, about 30 s) fine-tunes the head of the ImageNet-pretrained backbone
(real weights: the `imagenet_weights` fixture) on three colour classes with the trainer's
default optimisation, from a dataset with the classic tool's 1-based labels, while the test
scrapes its Prometheus endpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.request

import numpy as np
import pytest

from tests.trainer_testdata import (
    error_lines,
    free_port,
    run_trainer,
    start_trainer,
    val_jpegs,
    write_dataset,
)

tf = pytest.importorskip("tensorflow")

# Keras 3.15 calls np.array(tensor) with NumPy 2's copy keyword unsupported: harmless, noisy.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

STEPS = 120
BATCH = 8
FLAGS = [
    "--image-size", "75",
    "--fine-tune", "head",
    "--steps", str(STEPS),
    "--batch-size", str(BATCH),
    "--checkpoint-every", "50",
    "--keep-checkpoints", "2",
]  # fmt: skip


class Run:
    def __init__(self, data: str, run_dir: str, log: str, rc: int, metrics: str | None) -> None:
        self.data, self.run_dir, self.log, self.rc, self.metrics = data, run_dir, log, rc, metrics

    def path(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts)

    def hparams(self) -> dict:
        with open(self.path("hparams.json")) as f:
            return json.load(f)


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, imagenet_weights: str) -> Run:
    root = tmp_path_factory.mktemp("trainer-run")
    data = str(root / "datasets" / "colours")
    write_dataset(data, label_offset=1)
    run_dir = str(root / "runs" / "lr-0.001")
    port = free_port()
    log_path = str(root / "train.log")
    flags = [*FLAGS, "--weights", imagenet_weights, "--metrics-port", str(port)]
    proc = start_trainer(data, run_dir, *flags, log_path=log_path)
    last_scrape = None
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        # The endpoint lives as long as the process; the export (seconds) comes after the
        # last step and checkpoint, so the last scrape sees the finished training.
        last_scrape = _scrape(port) or last_scrape
        time.sleep(0.3)
    rc = proc.wait(timeout=10)
    with open(log_path) as f:
        log = f.read()
    return Run(data, run_dir, log, rc, last_scrape)


def test_run_succeeds_and_logs_every_10_steps_in_the_classic_format(run: Run) -> None:
    assert run.rc == 0, run.log
    lines = re.findall(
        r"step (\d+), loss = (\d+\.\d\d) \((\d+\.\d) examples/sec; (\d+\.\d{3}) sec/batch\), "
        r"lr = ([0-9.e-]+)",
        run.log,
    )
    assert [int(step) for step, *_ in lines] == list(range(10, STEPS + 1, 10))
    assert all(float(lr) == 0.001 for *_, lr in lines)  # the default
    assert "head fitted to the frozen backbone's features of 72 training images" in run.log
    assert all(float(rate) > 0 for _, _, rate, _, _ in lines)
    assert "Traceback" not in run.log


def test_validation_accuracy_clearly_beats_chance(run: Run) -> None:
    """Read back the way the evaluator will: build_classifier + checkpoint + eval_dataset."""
    from common import data, manifest, model

    hparams = run.hparams()
    net = model.build_classifier(hparams["num_classes"], hparams["image_size"])
    latest = tf.train.latest_checkpoint(run.path("checkpoints"))
    assert latest.endswith(f"ckpt-{STEPS}")
    tf.train.Checkpoint(model=net).read(latest).expect_partial()
    ds_manifest = manifest.load(hparams["data"])
    correct = total = 0
    for images, labels in data.eval_dataset(
        hparams["data"], ds_manifest, "validation", hparams["image_size"], batch_size=10
    ):
        predicted = np.argmax(net(images, training=False).numpy(), axis=1)
        correct += int((predicted == labels.numpy()).sum())
        total += len(labels)
    assert total == ds_manifest.count("validation")
    # Chance is 1/3; ImageNet features tell these colours apart at once (the head is fitted to
    # them before the first step). 18 of 24 or better (20 to 24 seen; 18 by chance: p < 1e-4).
    assert correct / total >= 0.75


def test_run_dir_holds_hparams_checkpoints_marker_and_export(run: Run) -> None:
    hparams = run.hparams()
    assert hparams["labels"] == ["red", "green", "blue"]
    assert hparams["num_classes"] == 3
    assert hparams["label_offset"] == 1
    assert hparams["data"] == run.data
    for key, value in {
        "image_size": 75, "lr": 0.001, "batch_size": BATCH, "fine_tune": "head",
        "optimizer": "rmsprop", "head_init": "auto", "steps": STEPS, "train_examples": 72,
    }.items():  # fmt: skip
        assert hparams[key] == value, key
    # Which weights the run started from: the file, where it came from, its checksum.
    from trainer import weights

    assert hparams["weights"].endswith("inception_v3_notop.h5")
    assert hparams["weights_file"] == {
        "source": weights.source_of(hparams["weights"]),
        "sha256": weights.sha256_of(hparams["weights"]),
    }
    assert "ImageNet" in hparams["weights_file"]["source"]

    names = sorted(os.listdir(run.path("checkpoints")))
    assert "checkpoint" in names
    # Saved at 50, 100 and the last step; only the newest two are kept.
    assert sorted({n.split(".")[0] for n in names if n.startswith("ckpt-")}) == [
        "ckpt-100",
        f"ckpt-{STEPS}",
    ]
    reader = tf.train.load_checkpoint(run.path("checkpoints", f"ckpt-{STEPS}"))
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == STEPS

    with open(run.path("complete.json")) as f:
        complete = json.load(f)
    assert complete["final_step"] == STEPS
    # The marker is written after the export.
    assert os.path.getmtime(run.path("complete.json")) >= os.path.getmtime(
        run.path("export", "saved_model.pb")
    )


def test_export_classifies_encoded_jpegs(run: Run) -> None:
    """The export answers what the final checkpoint answers, from encoded JPEGs alone."""
    from common import data, model

    loaded = tf.saved_model.load(run.path("export"))
    serve = loaded.signatures["serving_default"]
    samples = val_jpegs(per_class=8)
    out = serve(image_bytes=tf.constant([jpeg for _, jpeg in samples]))
    probabilities, labels = out["probabilities"].numpy(), out["labels"].numpy()
    assert probabilities.shape == (len(samples), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert labels.shape == (len(samples), 3)
    assert [x.decode() for x in labels[0]] == ["red", "green", "blue"]

    hparams = run.hparams()
    net = model.build_classifier(hparams["num_classes"], hparams["image_size"])
    tf.train.Checkpoint(model=net).read(
        tf.train.latest_checkpoint(run.path("checkpoints"))
    ).expect_partial()
    size = hparams["image_size"]
    images = tf.stack([data.preprocess_for_eval(jpeg, size) for _, jpeg in samples])
    expected = tf.nn.softmax(net(images, training=False)).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)

    predicted = [labels[i, j].decode() for i, j in enumerate(probabilities.argmax(axis=1))]
    hits = sum(p == truth for p, (truth, _) in zip(predicted, samples, strict=True))
    assert hits / len(samples) >= 0.75  # chance is 1/3
    with open(run.path("export", "labels.txt")) as f:
        assert f.read().split() == ["red", "green", "blue"]


def test_tensorboard_events_hold_scalars_images_and_hparams(run: Run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata as hparams_metadata

    train = EventAccumulator(run.path("train"), size_guidance={"tensors": 0})
    train.Reload()
    tags = train.Tags()
    # tf.summary writes scalars as tensors.
    assert {"loss", "learning_rate", "examples_per_sec"} <= set(tags["tensors"])
    assert [e.step for e in train.Tensors("loss")] == list(range(10, STEPS + 1, 10))
    assert tf.make_ndarray(train.Tensors("learning_rate")[-1].tensor_proto) == pytest.approx(0.001)
    assert "inputs" in tags["tensors"]  # image summaries are tensors too
    images = train.Tensors("inputs")[0].tensor_proto.string_val
    assert len(images) == 2 + 3  # width, height, then three encoded PNGs

    root = EventAccumulator(run.path(), size_guidance={"tensors": 0})
    root.Reload()
    content = root.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    start = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG]
    )
    assert start.hparams["lr"].number_value == pytest.approx(0.001)
    assert start.hparams["optimizer"].string_value == "rmsprop"
    # Hyperparameters only: no bookkeeping (creation time, format, counts) among the filters.
    assert not {"created", "format", "num_classes", "train_examples"} & set(start.hparams)


def test_prometheus_metrics(run: Run) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    assert run.metrics, "the metrics endpoint was never reachable"
    samples = {
        sample.name: sample
        for family in text_string_to_metric_families(run.metrics)
        for sample in family.samples
    }
    run_name = os.path.basename(run.run_dir)

    def value(name: str) -> float:
        assert samples[name].labels.get("run") == run_name, name
        return samples[name].value

    assert value("finetune_train_steps_total") == STEPS
    assert value("finetune_train_examples_total") == STEPS * BATCH
    assert value("finetune_train_global_step") == STEPS
    assert value("finetune_train_learning_rate") == pytest.approx(0.001)
    assert 0 < value("finetune_train_loss") < 5
    assert value("finetune_train_step_duration_seconds_count") == STEPS
    assert value("finetune_train_step_duration_seconds_sum") > 0
    assert value("finetune_checkpoint_save_seconds_count") == 3
    assert value("finetune_checkpoint_last_step") == STEPS


def test_backbone_is_untouched_when_only_the_head_trains(run: Run) -> None:
    from common import model

    def weights_at(step: int) -> tuple[list, list]:
        net = model.build_classifier(3, 75)
        tf.train.Checkpoint(model=net).read(
            run.path("checkpoints", f"ckpt-{step}")
        ).expect_partial()
        return model.backbone_of(net).get_weights(), model.head_of(net).get_weights()

    backbone_a, head_a = weights_at(100)
    backbone_b, head_b = weights_at(STEPS)
    assert all(np.array_equal(a, b) for a, b in zip(backbone_a, backbone_b, strict=True))
    assert not np.array_equal(head_a[0], head_b[0])


def test_a_contradicting_flag_is_refused_and_changes_nothing(run: Run) -> None:
    before = {name: os.path.getmtime(run.path(name)) for name in os.listdir(run.run_dir)}
    result = run_trainer(
        run.data, run.run_dir, *FLAGS[:-2], "--lr", "0.1", "--keep-checkpoints", "2"
    )
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: --lr 0.1 (saved: 0.001) contradicts the run")
    assert "--force" in lines[0]
    after = {name: os.path.getmtime(run.path(name)) for name in os.listdir(run.run_dir)}
    assert after == before


def test_rerunning_a_complete_run_does_nothing(run: Run) -> None:
    before = sorted(os.listdir(run.path("checkpoints")))
    result = run_trainer(run.data, run.run_dir)  # no flags: the saved hyperparameters
    assert result.returncode == 0, result.stderr
    assert "already complete at step 120" in result.stderr
    assert sorted(os.listdir(run.path("checkpoints"))) == before


def test_force_extends_a_finished_run_and_records_the_change(run: Run, tmp_path) -> None:  # noqa: ANN001
    run_dir = str(tmp_path / "lr-0.001")
    shutil.copytree(run.run_dir, run_dir)
    result = run_trainer(
        run.data, run_dir, "--steps", str(STEPS + 4), "--force", "--log-every", "2"
    )
    assert result.returncode == 0, result.stderr
    assert f"resumed from checkpoint at step {STEPS} of {STEPS + 4}" in result.stderr
    assert re.search(rf"step {STEPS + 2}, loss", result.stderr)
    with open(os.path.join(run_dir, "complete.json")) as f:
        assert json.load(f)["final_step"] == STEPS + 4
    with open(os.path.join(run_dir, "hparams.json")) as f:
        hparams = json.load(f)
    assert hparams["steps"] == STEPS + 4
    assert hparams["lr"] == 0.001  # not given: kept as saved
    [change] = hparams["changes"]
    assert change["from_step"] == STEPS
    assert change["changed"] == {"steps": {"old": STEPS, "new": STEPS + 4}}
