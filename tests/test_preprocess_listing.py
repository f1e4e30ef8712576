"""Listing a split folder: links that would store the same images under a second label."""

from __future__ import annotations

import logging
import os

from common import manifest
from preprocess.build import Options, build
from preprocess.listing import list_split
from tests import imagefiles


def linked_train(tmp_path) -> tuple[str, dict[str, str]]:  # noqa: ANN001
    """A train dir with real classes cat and dog, a linked class bird kept elsewhere, and links
    that would copy classes: to the train dir itself, to a folder above it, to another class.
    Returns the train dir and {link path: a word its reason must hold}."""
    root = tmp_path / "photos"
    train = imagefiles.make_folder(str(root / "train"), {"cat": 2, "dog": 3})
    birds = imagefiles.make_folder(str(tmp_path / "elsewhere"), {"bird": 2}, size=(40, 36))
    os.symlink(f"{birds}/bird", f"{train}/bird")  # a class kept elsewhere: an ordinary class
    links = {
        f"{train}/everything": "train dir",
        f"{train}/up": "above",
        f"{train}/puppies": "dog",
        f"{train}/small_dogs": "dog",
    }
    os.symlink(train, f"{train}/everything")
    os.symlink(str(root), f"{train}/up")
    os.symlink(f"{train}/dog", f"{train}/puppies")
    imagefiles.write_file(f"{train}/dog/small/tiny.jpg", imagefiles.jpeg(20, 16))
    os.symlink(f"{train}/dog/small", f"{train}/small_dogs")
    os.symlink(train, f"{train}/cat/loop")  # inside a class: never followed
    links[f"{train}/cat/loop"] = "not followed"
    return train, links


def test_links_that_would_copy_classes_are_skipped_with_a_reason(tmp_path) -> None:  # noqa: ANN001
    train, links = linked_train(tmp_path)

    listing = list_split(train, "train dir")

    assert sorted(listing.classes) == ["bird", "cat", "dog"]
    assert [len(listing.classes[c]) for c in ("bird", "cat", "dog")] == [2, 2, 4]
    reasons = {skip.path: skip.reason for skip in listing.skipped}
    assert set(reasons) == set(links)
    for path, word in links.items():
        assert word in reasons[path], (path, reasons[path])


def test_a_class_linked_to_another_keeps_the_real_folder(tmp_path) -> None:  # noqa: ANN001
    """Whatever the names' order, the link is what is left out, not the folder it points to."""
    train = imagefiles.make_folder(str(tmp_path / "train"), {"zebra": 2})
    os.symlink(f"{train}/zebra", f"{train}/aardvark")

    listing = list_split(train, "train dir")

    assert list(listing.classes) == ["zebra"]
    assert [s.path for s in listing.skipped] == [f"{train}/aardvark"]


def test_a_run_reports_the_links_and_stores_each_image_once(tmp_path, caplog) -> None:  # noqa: ANN001
    train, links = linked_train(tmp_path)
    val = imagefiles.make_folder(str(tmp_path / "val"), {"cat": 1, "dog": 1}, size=(40, 32))
    out = str(tmp_path / "ds")
    os.unlink(f"{train}/cat/loop")  # a skipped folder inside a class would fail --strict
    del links[f"{train}/cat/loop"]

    with caplog.at_level(logging.INFO, logger="preprocess"):
        build(Options(train, val, out, strict=True))  # links left out are no skipped images

    result = manifest.load(out)
    assert result.labels == ["bird", "cat", "dog"]
    assert result.splits["train"].count == 8
    skipped = {entry["path"]: entry["reason"] for entry in result.skipped}
    assert set(skipped) == set(links)
    for path, word in links.items():
        assert word in skipped[path]
        assert path in caplog.text
