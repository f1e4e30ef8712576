"""Find the image files of a split folder (local or gs://): one sub-folder per class.

OS litter is ignored silently; everything else that cannot hold an image is reported as
skipped with a reason. Whether a file really is an image is decided later, by its content.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

from common import storage
from common.cli import UserError

# Files and folders that operating systems and zip tools leave behind; never the user's images.
_LITTER_NAMES = {".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", "__macosx"}


@dataclasses.dataclass(frozen=True)
class Found:
    uri: str
    relpath: str  # relative to the split folder, with "/": "dog/img_001.jpg"
    size: int  # bytes; -1 when the listing does not tell


@dataclasses.dataclass(frozen=True)
class Skip:
    path: str
    reason: str
    is_image: bool = True  # False for whole folders left out on purpose (labels file)

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclasses.dataclass
class SplitListing:
    root: str
    classes: dict[str, list[Found]]  # class folder name -> its files, sorted by relpath
    skipped: list[Skip]


def is_litter(name: str) -> bool:
    """Hidden files and folders (this covers AppleDouble `._*`) and the known OS droppings."""
    return name.startswith(".") or name.lower() in _LITTER_NAMES


def list_split(root: str, role: str) -> SplitListing:
    """The class folders under root and their files; `role` names the flag in messages."""
    root = storage.normalize(root)
    try:
        found = storage.is_dir(root)
    except FileNotFoundError:  # a bucket that does not exist
        found = False
    if not found:
        raise UserError(f"{role} {root} does not exist or is not a folder.")
    listing = _list_gcs(root) if storage.is_gcs(root) else _list_local(root)
    if not listing.classes:
        raise UserError(
            f"{role} {root} has no class sub-folders (expected one folder per class, "
            f"e.g. {storage.join(root, 'dog', 'img_001.jpg')})."
        )
    return listing


def _list_local(root: str) -> SplitListing:
    classes: dict[str, list[Found]] = {}
    skipped: list[Skip] = []
    try:
        with os.scandir(root) as it:
            top = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise UserError(f"cannot list {root}: {exc.strerror or exc}.") from exc
    for entry in top:
        if is_litter(entry.name):
            continue
        if entry.is_dir():  # a class folder may be a link to elsewhere
            files: list[Found] = []
            for item in _walk_local(entry.path, entry.name):
                (files if isinstance(item, Found) else skipped).append(item)
            classes[entry.name] = files
        else:
            skipped.append(Skip(entry.path, "not inside a class folder"))
    return SplitListing(root, classes, skipped)


def _walk_local(folder: str, rel: str) -> Iterator[Found | Skip]:
    skipped: list[Skip] = []
    for entry in _scandir_sorted(folder, skipped):
        if is_litter(entry.name):
            continue
        relpath = f"{rel}/{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_local(entry.path, relpath)
        elif entry.is_symlink() and not os.path.exists(entry.path):
            yield Skip(entry.path, "broken symbolic link")
        elif entry.is_dir():
            yield Skip(entry.path, "link to a folder inside a class folder (not followed)")
        elif not entry.is_file():
            yield Skip(entry.path, "not a regular file")
        else:
            yield Found(entry.path, relpath, _size(entry))
    yield from skipped


def _scandir_sorted(folder: str, skipped: list[Skip]) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        skipped.append(Skip(folder, f"cannot list folder ({exc.strerror or exc})"))
        return []


def _size(entry: os.DirEntry) -> int:
    try:
        return entry.stat().st_size
    except OSError:
        return -1


def _list_gcs(root: str) -> SplitListing:
    classes: dict[str, list[Found]] = {}
    skipped: list[Skip] = []
    for uri in storage.list_files(root, recursive=True):
        relpath = uri[len(root) + 1 :]
        parts = relpath.split("/")
        if any(is_litter(part) for part in parts):
            continue
        if len(parts) == 1:
            skipped.append(Skip(uri, "not inside a class folder"))
            continue
        classes.setdefault(parts[0], []).append(Found(uri, relpath, -1))
    return SplitListing(root, classes, skipped)
