"""Find the image files of a split folder (local or gs://): one sub-folder per class.

OS litter is ignored silently; everything else that cannot hold an image is reported as
skipped with a reason. Whether a file really is an image is decided later, by its content.
A class folder may be a link to elsewhere, but not one that would store images a second time
under another label: a link to the split folder itself or to a folder above it (every class
again), or into another class's folder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import unicodedata
from collections.abc import Iterator

from common import storage
from common.cli import UserError

log = logging.getLogger("preprocess")
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


def control_character(name: str) -> str | None:
    """The first character of `name` that would break a one-name-per-line file, or None.

    labels.txt holds one class name per line, and readers split lines on more than "\\n"
    (Python's splitlines also splits on \\r, \\x1c-\\x1e, \\x85, \\u2028): a name holding
    any control character or line separator would shift every class id after it.
    """
    for char in name:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return char
    return None


def check_class_name(name: str, what: str) -> str:
    """The name itself, or one sentence when it holds a control character; `what` names the
    name's origin for that sentence (class folder 'a\\nb' of the train dir /photos/train)."""
    char = control_character(name)
    if char is not None:
        raise UserError(
            f"{what} has a control character ({char!r}) in its name, which would shift the "
            "class ids of labels.txt (one name per line); rename it."
        )
    return name


def list_split(root: str, role: str) -> SplitListing:
    """The class folders under root and their files; `role` names the flag in messages."""
    root = storage.normalize(root)
    try:
        found = storage.is_dir(root)
    except FileNotFoundError:  # a bucket that does not exist
        found = False
    if not found:
        raise UserError(f"{role} {root} does not exist or is not a folder.")
    listing = _list_gcs(root) if storage.is_gcs(root) else _list_local(root, role)
    if not listing.classes:
        raise UserError(
            f"{role} {root} has no class sub-folders (expected one folder per class, "
            f"e.g. {storage.join(root, 'dog', 'img_001.jpg')})."
        )
    for name in listing.classes:
        check_class_name(name, f"class folder {name!r} of the {role} {root}")
    return listing


def _list_local(root: str, role: str) -> SplitListing:
    classes: dict[str, list[Found]] = {}
    skipped: list[Skip] = []
    try:
        with os.scandir(root) as it:
            top = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise UserError(f"cannot list {root}: {exc.strerror or exc}.") from exc
    folders = []
    for entry in top:
        if is_litter(entry.name):
            continue
        if entry.is_dir():  # a class folder may be a link to elsewhere
            folders.append(entry)
        else:
            skipped.append(Skip(entry.path, "not inside a class folder"))
    repeats = _repeated_folders(root, role, folders)
    for entry in folders:
        if entry.name in repeats:
            log.warning("%s: left out %s: %s", role, entry.path, repeats[entry.name])
            skipped.append(Skip(entry.path, repeats[entry.name], is_image=False))
            continue
        files: list[Found] = []
        for item in _walk_local(entry.path, entry.name):
            (files if isinstance(item, Found) else skipped).append(item)
        classes[entry.name] = files
    return SplitListing(root, classes, skipped)


def _repeated_folders(root: str, role: str, folders: list[os.DirEntry]) -> dict[str, str]:
    """Class folders whose images another class (or every class) already holds, with why.

    Folders that are not links are taken first, so when a link and a real folder cover the
    same images, the link is what is left out.
    """
    root_real = os.path.realpath(root)
    kept: list[tuple[str, str]] = []  # (class name, real path)
    repeats = {}
    for entry in sorted(folders, key=lambda e: (e.is_symlink(), e.name)):
        real = os.path.realpath(entry.path)
        why = _why_repeated(real, root_real, role, kept)
        if why:
            repeats[entry.name] = f"{why}; not followed"
        else:
            kept.append((entry.name, real))
    return repeats


def _why_repeated(real: str, root_real: str, role: str, kept: list[tuple[str, str]]) -> str:
    """Why the folder at real path `real` must not be a class, or "" when it may."""
    again = "every class would be stored again under a second label"
    if real == root_real:
        return f"link to the {role} itself ({again})"
    if _within(root_real, real):
        return f"link to a folder above the {role} ({again})"
    for name, path in kept:
        if _within(real, path) or _within(path, real):
            return f"link to the images of class folder {name!r} (stored under two labels)"
    return ""


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


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
