"""Decide the classes: the train folder's sub-folders, or the user's labels file.

Class id i is line i of labels.txt (0-based, no background class). Everything that would make
a dataset silently wrong (a validation class the model never trains on, a class with no
images, a label listed twice) stops the run before anything is written.
"""

from __future__ import annotations

from common import storage
from common.cli import UserError
from preprocess.listing import Skip, SplitListing, check_class_name


def read_labels_file(uri: str) -> list[str]:
    """One label per line; blank lines and surrounding spaces are ignored.

    Lines end at "\\n" only (a CRLF file's "\\r" is stripped with the spaces): a label holding
    any other control character is refused, as a class folder named so is, rather than split
    into two labels the way str.splitlines would.
    """
    try:
        text = storage.read_text(uri)
    except FileNotFoundError as exc:
        raise UserError(f"labels file {uri} does not exist.") from exc
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read labels file {uri} ({exc}).") from exc
    labels = [line.strip() for line in text.split("\n") if line.strip()]
    if not labels:
        raise UserError(f"labels file {uri} lists no labels.")
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise UserError(f"labels file {uri} lists {label!r} twice.")
        if "/" in label:
            raise UserError(f"labels file {uri}: {label!r} has a '/', but labels are folder names.")
        check_class_name(label, f"labels file {uri}: label {label!r}")
        seen.add(label)
    return labels


def choose_labels(
    train: SplitListing, val: SplitListing, listed: list[str] | None
) -> tuple[list[str], list[Skip]]:
    """The class names in id order, and the class folders left out because they are unlisted."""
    labels = listed if listed is not None else sorted(train.classes)
    wanted = set(labels)
    for name in sorted(set(val.classes) - set(train.classes)):
        if listed is None or name in wanted:
            raise UserError(
                f"validation class {name!r} has no folder in the train dir {train.root}; "
                "the model could never learn it."
            )
    left_out: list[Skip] = []
    for listing in (train, val):
        for name in sorted(set(listing.classes) - wanted):
            path = storage.join(listing.root, name)
            left_out.append(Skip(path, "class folder not in the labels file", is_image=False))
    for name in labels:
        if not train.classes.get(name):
            where = storage.join(train.root, name)
            origin = "listed in the labels file" if listed is not None else "a train class"
            raise UserError(f"{name!r} is {origin} but has no image files in {where}.")
    if not any(val.classes.get(name) for name in labels):
        raise UserError(f"val dir {val.root} has no image files in any class folder.")
    return labels, left_out
