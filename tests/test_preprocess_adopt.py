"""`python -m preprocess adopt` on shards written the classic way (by TensorFlow, labels 1..N)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from common import manifest
from preprocess.adopt import adopt
from preprocess.build import Options, build
from tests import imagefiles

tf = pytest.importorskip("tensorflow")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["daisy", "rose", "tulip"]


def classic_example(label: int, text: str | None, index: int) -> bytes:
    """A record as build_image_data.py wrote it: label 1..N, 0 being 'background'."""
    jpeg = imagefiles.jpeg(32 + index, 24)

    def ints(v: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    def raw(v: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    feature = {
        "image/height": ints(24),
        "image/width": ints(32 + index),
        "image/colorspace": raw(b"RGB"),
        "image/channels": ints(3),
        "image/class/label": ints(label),
        "image/format": raw(b"JPEG"),
        "image/filename": raw(f"{index}.jpg".encode()),
        "image/encoded": raw(jpeg),
    }
    if text is not None:
        feature["image/class/text"] = raw(text.encode())
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_classic(
    folder: str, counts: dict[str, list[int]], shards: dict[str, int], text: bool = True
) -> None:
    """counts: split -> records per class (in CLASSES order); written round-robin into shards."""
    os.makedirs(folder, exist_ok=True)
    for split, per_class in counts.items():
        labels = [c for c, n in enumerate(per_class) for _ in range(n)]
        writers = [
            tf.io.TFRecordWriter(os.path.join(folder, f"{split}-{i:05d}-of-{shards[split]:05d}"))
            for i in range(shards[split])
        ]
        for index, class_id in enumerate(labels):
            name = CLASSES[class_id] if text else None
            writers[index % len(writers)].write(classic_example(class_id + 1, name, index))
        for writer in writers:
            writer.close()


def test_classic_shards_get_label_offset_one_and_exact_counts(tmp_path) -> None:  # noqa: ANN001
    folder = str(tmp_path / "flowers")
    write_classic(
        folder, {"train": [5, 3, 4], "validation": [1, 2, 0]}, {"train": 2, "validation": 1}
    )

    result = adopt(folder)

    assert result == manifest.load(folder)
    assert result.label_offset == 1
    assert result.labels == CLASSES
    assert result.splits["train"].count == 12
    assert result.splits["train"].per_class == {"daisy": 5, "rose": 3, "tulip": 4}
    assert result.splits["validation"].per_class == {"daisy": 1, "rose": 2, "tulip": 0}
    assert result.splits["train"].shards == ["train-00000-of-00002", "train-00001-of-00002"]
    assert result.image_stats["width"]["min"] == 32
    with open(os.path.join(folder, "labels.txt")) as f:
        assert f.read() == "daisy\nrose\ntulip\n"


def test_a_labels_file_names_classes_when_records_carry_no_text(tmp_path) -> None:  # noqa: ANN001
    folder = str(tmp_path / "flowers")
    write_classic(folder, {"train": [2, 2, 1]}, {"train": 1}, text=False)
    labels = imagefiles.write_file(str(tmp_path / "classic_labels.txt"), b"daisy\nrose\ntulip\n")

    result = adopt(folder, labels)

    assert result.label_offset == 1 and result.labels == CLASSES
    assert result.splits["train"].per_class == {"daisy": 2, "rose": 2, "tulip": 1}
    assert list(result.splits) == ["train"]


def test_our_own_dataset_is_recognised_as_zero_based(tmp_path) -> None:  # noqa: ANN001
    train = imagefiles.make_folder(str(tmp_path / "train"), {"a": 3, "b": 2})
    val = imagefiles.make_folder(str(tmp_path / "val"), {"a": 1, "b": 1})
    out = str(tmp_path / "ours")
    build(Options(train, val, out))
    built = manifest.load(out)
    os.remove(os.path.join(out, "dataset.json"))

    result = adopt(out)

    assert result.label_offset == 0
    assert (result.labels, result.splits) == (built.labels, built.splits)


def adopt_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "preprocess", "adopt", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_what_adopt_cannot_know_is_one_sentence_and_nothing_written(tmp_path) -> None:  # noqa: ANN001
    no_text = str(tmp_path / "no_text")
    write_classic(no_text, {"train": [1, 1, 1]}, {"train": 1}, text=False)
    incomplete = str(tmp_path / "incomplete")
    write_classic(incomplete, {"train": [2, 2, 2]}, {"train": 3})
    os.remove(os.path.join(incomplete, "train-00001-of-00003"))
    user_labels = str(tmp_path / "kept")
    write_classic(user_labels, {"train": [1, 1, 1]}, {"train": 1})
    imagefiles.write_file(os.path.join(user_labels, "labels.txt"), b"background\ndaisy\n")

    for folder, words in (
        (no_text, "--labels-file"),
        (incomplete, "train-00001-of-00003"),
        (user_labels, "labels.txt"),
        (str(tmp_path / "nothing"), "does not exist"),
    ):
        result = adopt_cli("--dir", folder)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and lines[-1].startswith("error:"), result.stderr
        assert len(lines) == 1 and words in lines[0]
        assert not os.path.exists(os.path.join(folder, "dataset.json"))
    with open(os.path.join(user_labels, "labels.txt"), "rb") as f:
        assert f.read() == b"background\ndaisy\n"

    names = imagefiles.write_file(str(tmp_path / "names.txt"), b"daisy\nrose\ntulip\n")
    fine = adopt_cli("--dir", no_text, "--labels-file", names)
    assert fine.returncode == 0, fine.stderr
    assert manifest.load(no_text).label_offset == 1
