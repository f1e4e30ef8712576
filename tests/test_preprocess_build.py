"""Whole preprocess runs (in-process) on real folders: what lands in the dataset, and what not."""

from __future__ import annotations

import collections
import errno
import os

import pytest

from common import manifest, storage
from common.cli import UserError
from preprocess.build import Options, build
from preprocess.output import WRITTEN_NAME
from tests import imagefiles

pytest.importorskip("tensorflow")

LITTER = [".DS_Store", "Thumbs.db", "desktop.ini", "._cat_001.jpg", ".hidden.jpg"]


def run(train: str, val: str, out: str, **options: object) -> manifest.Manifest:
    build(Options(train_dir=train, val_dir=val, out=out, **options))
    return manifest.load(out)


def records_of(out: str, result: manifest.Manifest) -> dict[str, list[dict]]:
    return {split: imagefiles.read_split(out, info.shards) for split, info in result.splits.items()}


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def shard_files(out: str) -> dict[str, bytes]:
    return {
        name: read(os.path.join(out, name))
        for name in sorted(os.listdir(out))
        if name.startswith(("train-", "validation-"))
    }


def test_every_kind_of_file_in_a_real_folder(tmp_path) -> None:  # noqa: ANN001
    train, val = str(tmp_path / "train"), str(tmp_path / "val")
    for name, (make, ext) in imagefiles.KINDS.items():
        imagefiles.write_file(f"{train}/mixed/{name}{ext}", make())
    imagefiles.make_folder(train, {"photos": 6})
    imagefiles.make_folder(val, {"mixed": 2, "photos": 3})
    bad = {}
    for name, (data, word) in imagefiles.not_images().items():
        bad[imagefiles.write_file(f"{train}/mixed/{name}", data)] = word
    for name in LITTER:
        imagefiles.write_file(f"{train}/photos/{name}", b"litter")
    imagefiles.write_file(f"{train}/.git/config.jpg", b"hidden folder")
    imagefiles.write_file(f"{train}/__MACOSX/photos/._x.jpg", b"zip litter")
    os.symlink(f"{train}/nowhere.jpg", f"{train}/photos/dangling.jpg")
    bad[f"{train}/photos/dangling.jpg"] = "broken"
    bad[imagefiles.write_file(f"{train}/stray.jpg", imagefiles.jpeg())] = "class folder"
    out = str(tmp_path / "dataset")

    result = run(train, val, out)

    records = records_of(out, result)
    assert result.labels == ["mixed", "photos"]
    assert read(f"{out}/labels.txt") == b"mixed\nphotos\n"
    for split, split_records in records.items():
        info = result.splits[split]
        assert info.count == len(split_records)
        by_class = collections.Counter(r["class/text"].decode() for r in split_records)
        assert info.per_class == {label: by_class[label] for label in result.labels}
        for record in split_records:  # what TensorFlow decodes is what the record states
            assert record["decoded_shape"] == (record["height"], record["width"], 3)
            assert record["channels"] == 3 and record["colorspace"] == b"RGB"
            assert record["class/label"] == result.labels.index(record["class/text"].decode())
    assert result.splits["train"].per_class == {"mixed": len(imagefiles.KINDS), "photos": 6}
    filenames = {r["filename"].decode() for r in records["train"]}
    assert "mixed/png_named_jpg.jpg" in filenames and "photos/photos_003.png" in filenames

    reasons = {entry["path"]: entry["reason"] for entry in result.skipped}
    assert set(reasons) == set(bad)
    for path, word in bad.items():
        assert word in reasons[path].lower(), (path, reasons[path])
    assert not [p for p in reasons if "DS_Store" in p or "Thumbs" in p or "MACOSX" in p]
    assert result.label_offset == 0 and result.name == "dataset"
    stats = result.image_stats
    assert stats["count"] == result.splits["train"].count + result.splits["validation"].count
    assert stats["height"]["min"] >= 40 and stats["width"]["max"] == 64


def test_max_side_applies_to_the_whole_run(tmp_path) -> None:  # noqa: ANN001
    imagefiles.make_folder(str(tmp_path / "train"), {"a": 3, "b": 3}, size=(300, 200))
    imagefiles.make_folder(str(tmp_path / "val"), {"a": 1}, size=(60, 40))
    out = str(tmp_path / "out")

    result = run(str(tmp_path / "train"), str(tmp_path / "val"), out, max_side=150)

    shapes = {s: {r["decoded_shape"] for r in recs} for s, recs in records_of(out, result).items()}
    assert shapes == {"train": {(100, 150, 3)}, "validation": {(40, 60, 3)}}
    assert result.source["max_side"] == 150


def test_output_is_deterministic_and_shuffled_across_classes(tmp_path) -> None:  # noqa: ANN001
    train, val = str(tmp_path / "train"), str(tmp_path / "val")
    imagefiles.make_folder(train, {"a": 12, "b": 12, "c": 12})
    imagefiles.make_folder(val, {"a": 2, "b": 2, "c": 2})

    first = run(train, val, str(tmp_path / "one"), train_shards=3, workers=2)
    second = run(train, val, str(tmp_path / "two"), train_shards=3)

    assert shard_files(str(tmp_path / "one")) == shard_files(str(tmp_path / "two"))
    assert first.splits == second.splits
    records = records_of(str(tmp_path / "one"), first)["train"]
    labels = [r["class/label"] for r in records]
    assert labels != sorted(labels)
    for shard in first.splits["train"].shards:
        assert len({r["class/label"] for r in records if r["shard"] == shard}) > 1


def test_labels_file_sets_the_order_and_leaves_unlisted_folders_out(tmp_path) -> None:  # noqa: ANN001
    train, val = str(tmp_path / "train"), str(tmp_path / "val")
    imagefiles.make_folder(train, {"ant": 2, "zebra": 3, "cow": 2})
    imagefiles.make_folder(val, {"zebra": 1, "cow": 1})
    labels_file = imagefiles.write_file(str(tmp_path / "labels.txt"), b"zebra\n\n ant \n")
    out = str(tmp_path / "out")

    result = run(train, val, out, labels_file=labels_file)

    assert result.labels == ["zebra", "ant"]
    assert result.splits["train"].per_class == {"zebra": 3, "ant": 2}
    assert result.splits["validation"].per_class == {"zebra": 1, "ant": 0}
    records = records_of(out, result)
    assert {(r["class/label"], r["class/text"]) for r in records["train"]} == {
        (0, b"zebra"),
        (1, b"ant"),
    }
    left_out = {e["path"]: e["reason"] for e in result.skipped}
    assert set(left_out) == {f"{train}/cow", f"{val}/cow"}
    assert all("labels file" in reason for reason in left_out.values())


def test_rerun_with_fewer_shards_leaves_no_stale_shard(tmp_path) -> None:  # noqa: ANN001
    train, val = str(tmp_path / "train"), str(tmp_path / "val")
    imagefiles.make_folder(train, {"a": 8, "b": 8})
    imagefiles.make_folder(val, {"a": 2, "b": 2})
    out = str(tmp_path / "out")
    run(train, val, out, train_shards=4, val_shards=2)
    mine = {"notes.txt": b"mine", "train-notes": b"also mine", "train-00001-of-00004.bak": b"x"}
    for name, data in mine.items():
        imagefiles.write_file(f"{out}/{name}", data)

    result = run(train, val, out, train_shards=2)

    expected_shards = ["train-00000-of-00002", "train-00001-of-00002", "validation-00000-of-00001"]
    assert sorted(os.listdir(out)) == sorted(
        [*expected_shards, *mine, "dataset.json", "labels.txt", WRITTEN_NAME]
    )
    assert result.splits["train"].shards == expected_shards[:2]
    assert result.splits["train"].count == 16
    for name, data in mine.items():  # never delete what the user put there
        assert read(f"{out}/{name}") == data


def test_a_failed_run_leaves_no_manifest(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """A run that dies midway (here: the disk is full at its third shard) marks nothing complete."""
    train, val = str(tmp_path / "train"), str(tmp_path / "val")
    imagefiles.make_folder(train, {"a": 6, "b": 6})
    imagefiles.make_folder(val, {"a": 1})
    out = str(tmp_path / "out")
    run(train, val, out, train_shards=2)
    assert os.path.exists(f"{out}/dataset.json")
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        if str(dst).endswith("train-00002-of-00003"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)

    with pytest.raises(UserError, match="cannot write .*train-00002-of-00003"):
        build(Options(train_dir=train, val_dir=val, out=out, train_shards=3))

    assert os.path.exists(f"{out}/train-00001-of-00003")  # it did die midway
    assert not os.path.exists(f"{out}/dataset.json")
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_k_tasks_make_the_same_dataset_as_one(tmp_path) -> None:  # noqa: ANN001
    train, val = str(tmp_path / "train"), str(tmp_path / "val")
    imagefiles.make_folder(train, {"a": 9, "b": 7, "c": 5})
    imagefiles.make_folder(val, {"a": 2, "b": 2, "c": 2})
    imagefiles.write_file(f"{train}/a/broken.jpg", b"not a picture")
    single, split = str(tmp_path / "single"), str(tmp_path / "split")
    whole = run(train, val, single, train_shards=4, val_shards=2)

    for i, task in enumerate((2, 0, 1)):  # tasks finish in any order
        build(
            Options(train, val, split, train_shards=4, val_shards=2, task_index=task, task_count=3)
        )
        assert os.path.exists(f"{split}/dataset.json") == (i == 2)

    parts = manifest.load(split)
    assert shard_files(split) == shard_files(single)
    for field in ("labels", "splits", "skipped", "image_stats", "bytes_written", "label_offset"):
        assert getattr(parts, field) == getattr(whole, field), field


def test_more_tasks_than_shards_still_publish_once(tmp_path) -> None:  # noqa: ANN001
    train = imagefiles.make_folder(str(tmp_path / "train"), {"a": 3, "b": 2})
    val = imagefiles.make_folder(str(tmp_path / "val"), {"a": 1})
    out = str(tmp_path / "out")

    for task in range(4):  # one train shard and one validation shard: tasks 2 and 3 idle
        build(Options(train, val, out, workers=2, task_index=task, task_count=4))

    result = manifest.load(out)
    assert result.splits["train"].count == 5 and result.splits["validation"].count == 1


def test_gcs_input_and_output_give_the_same_dataset_as_local(tmp_path, gcs_bucket) -> None:  # noqa: ANN001
    train, val = str(tmp_path / "train"), str(tmp_path / "val")
    imagefiles.make_folder(train, {"a": 5, "b": 4})
    imagefiles.make_folder(val, {"a": 2, "b": 1})
    imagefiles.write_file(f"{train}/b/.DS_Store", b"litter")
    imagefiles.write_file(f"{train}/b/empty.jpg", b"")
    for root, _dirs, files in os.walk(tmp_path):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, tmp_path)
            storage.write_bytes(f"{gcs_bucket}/images/{rel}", read(path))
    local = run(train, val, str(tmp_path / "out"), train_shards=2)

    remote = run(
        f"{gcs_bucket}/images/train",
        f"{gcs_bucket}/images/val/",
        f"{gcs_bucket}/data/set",
        train_shards=2,
    )

    assert remote.name == "set"
    for field in ("labels", "splits", "image_stats", "bytes_written"):
        assert getattr(remote, field) == getattr(local, field), field
    assert [e["path"] for e in remote.skipped] == [f"{gcs_bucket}/images/train/b/empty.jpg"]
    for name, data in shard_files(str(tmp_path / "out")).items():
        assert storage.read_bytes(f"{gcs_bucket}/data/set/{name}") == data
    assert storage.read_text(f"{gcs_bucket}/data/set/labels.txt") == "a\nb\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file; run as a user to check")
def test_a_file_without_read_permission_is_skipped_with_a_reason(tmp_path) -> None:  # noqa: ANN001
    train = imagefiles.make_folder(str(tmp_path / "train"), {"a": 2})
    val = imagefiles.make_folder(str(tmp_path / "val"), {"a": 1})
    locked = imagefiles.write_file(f"{train}/a/locked.jpg", imagefiles.jpeg())
    os.chmod(locked, 0)

    result = run(train, val, str(tmp_path / "out"))

    assert result.skipped == [{"path": locked, "reason": "no permission to read the file"}]
    assert result.splits["train"].count == 2
