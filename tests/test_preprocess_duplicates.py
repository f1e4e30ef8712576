"""Exact duplicate images (same bytes) are reported, never dropped: within a class, across
classes (conflicting labels) and across train and validation (leakage)."""

from __future__ import annotations

import logging
import shutil

from common import manifest
from preprocess.build import Options, build
from tests import imagefiles


def duplicated(tmp_path) -> tuple[str, str, dict[str, tuple[str, str]]]:  # noqa: ANN001
    """Folders with one duplicate of each kind: {kind: (the original, its copy)}."""
    train = imagefiles.make_folder(str(tmp_path / "train"), {"a": 4, "b": 4})
    val = imagefiles.make_folder(str(tmp_path / "val"), {"a": 2, "b": 2}, size=(40, 32))
    pairs = {
        "within_class": (f"{train}/a/a_000.jpg", f"{train}/a/again.jpg"),
        "across_classes": (f"{train}/a/a_001.jpg", f"{train}/b/stray.jpg"),
        "train_validation": (f"{train}/b/b_002.jpg", f"{val}/b/leak.jpg"),
    }
    for original, copy in pairs.values():
        shutil.copyfile(original, copy)
    return train, val, pairs


def test_duplicates_are_counted_with_examples_and_kept(tmp_path, caplog) -> None:  # noqa: ANN001
    train, val, pairs = duplicated(tmp_path)
    out = str(tmp_path / "ds")

    with caplog.at_level(logging.INFO, logger="preprocess"):
        build(Options(train, val, out, train_shards=2))

    result = manifest.load(out)
    found = result.duplicates
    assert {kind: found[kind] for kind in pairs} == dict.fromkeys(pairs, 1)
    examples = {example["kind"]: sorted(example["files"]) for example in found["examples"]}
    assert examples == {kind: sorted(pair) for kind, pair in pairs.items()}
    assert result.splits["train"].count == 10 and result.splits["validation"].count == 5
    for words in ("validation accuracy", "conflicting labels", "same class"):
        assert words in caplog.text, words


def test_k_tasks_find_what_one_finds(tmp_path) -> None:  # noqa: ANN001
    train, val, _ = duplicated(tmp_path)
    single, split = str(tmp_path / "single"), str(tmp_path / "split")
    build(Options(train, val, single, train_shards=3, workers=2))
    for task in (1, 2, 0):
        build(Options(train, val, split, train_shards=3, task_index=task, task_count=3))

    assert manifest.load(split).duplicates == manifest.load(single).duplicates


def test_no_duplicates_says_so(tmp_path, caplog) -> None:  # noqa: ANN001
    train = imagefiles.make_folder(str(tmp_path / "train"), {"a": 3, "b": 3})
    val = imagefiles.make_folder(str(tmp_path / "val"), {"a": 1, "b": 1}, size=(40, 32))
    broken = [imagefiles.write_file(f"{train}/a/{n}.jpg", b"not a picture") for n in "xy"]

    with caplog.at_level(logging.INFO, logger="preprocess"):
        build(Options(train, val, str(tmp_path / "ds")))

    result = manifest.load(str(tmp_path / "ds"))
    assert {k: v for k, v in result.duplicates.items() if k != "examples"} == {
        "within_class": 0,
        "across_classes": 0,
        "train_validation": 0,
    }
    assert len(result.skipped) == len(broken)  # two equal broken files are no duplicates
    assert "duplicates: none" in caplog.text
