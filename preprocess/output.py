"""Keep the output folder honest: incomplete while rewriting, never a mix of two runs, and
never a file of someone else's touched.

The manifest is removed before the first shard is written and saved after the last, so a
reader either sees a complete dataset or none.

What a run may delete or overwrite is recorded, never guessed from names (classic shards of
`build_image_data.py` have exactly our names, and `adopt` exists for them). Before it writes
anything, a run writes into `--out` a small record of every name it is about to write, added to
the names earlier runs of ours wrote there. A run killed at any point therefore leaves a record
naming its shards, and the next run removes them. A dataset.json of ours also counts as a record
(datasets written before the record existed), and so does a part file of our own format. Any
other file under a name this run would write stops the run before it writes anything.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil

from common import manifest, storage
from common.cli import UserError
from preprocess import parts

log = logging.getLogger("preprocess")

TOOL = "python -m preprocess"  # dataset.json's source.tool for datasets this command wrote
SHARD_NAME = re.compile(r"^(train|validation)-\d{5}-of-\d{5}$")
WRITTEN_NAME = ".preprocess-written.json"  # the record of the files our runs wrote here
WRITTEN_FORMAT = "preprocess-written/1"
STAGING_DIR = ".preprocess-staging"  # local output: the runs' private folders of shard pieces
_PART_PATH = re.compile(
    rf"^{re.escape(parts.PARTS_DIR)}/([0-9a-f]{{16}})/part-(\d{{5}})-of-(\d{{5}})\.json$"
)


@dataclasses.dataclass(frozen=True)
class Names:
    """Paths relative to the output folder: files, and folders removed whole (local only)."""

    files: frozenset[str] = frozenset()
    folders: frozenset[str] = frozenset()

    def __or__(self, other: Names) -> Names:
        return Names(self.files | other.files, self.folders | other.folders)

    def __sub__(self, other: Names) -> Names:
        return Names(self.files - other.files, self.folders - other.folders)

    def __contains__(self, name: str) -> bool:
        return name in self.files or name in self.folders


def planned_names(out_dir: str, shards: list[str], fingerprint: str, task_count: int) -> Names:
    """Everything a run with these shards writes into out_dir, whichever task publishes."""
    files = {*shards, manifest.LABELS_NAME, manifest.MANIFEST_NAME}
    if task_count > 1:
        files.update(parts.part_name(fingerprint, i, task_count) for i in range(task_count))
    folders = set() if storage.is_gcs(out_dir) else {STAGING_DIR}
    return Names(frozenset(files), frozenset(folders))


def claim(out_dir: str, planned: Names, labels: list[str], task_count: int) -> Names:
    """Make sure this run may write every planned name, and record them before writing any.

    Returns what earlier runs of ours wrote here (to remove once this run is complete); raises
    UserError, with nothing written, when a file we did not write is in the way.
    """
    present = _present(out_dir)  # listed before the records are read: see _write_record
    owned = _owned(out_dir, present)
    _refuse_collisions(out_dir, planned, present, owned, labels, task_count)
    _warn_about_foreign_shards(out_dir, present, owned | planned)
    _write_record(out_dir, owned | planned)
    return owned


def mark_incomplete(out_dir: str) -> None:
    """Remove an earlier run's manifest before changing any shard."""
    uri = manifest.manifest_uri(out_dir)
    if storage.exists(uri):
        storage.delete(uri)
        log.info("removed the old %s: the dataset is incomplete until this run ends", uri)


def remove_earlier_runs(out_dir: str, owned: Names, planned: Names) -> list[str]:
    """Delete what earlier runs of ours wrote and this run does not, then record only this run.

    The record is read again: a sibling task may have added names this task had not seen.
    Deleting before shrinking the record means a kill in between only leaves names of files
    that are gone, which the next run skips.
    """
    stale = (owned | _read_record(out_dir)) - planned
    removed = []
    for name in sorted(stale.files):
        uri = storage.join(out_dir, name)
        if storage.exists(uri):
            storage.delete(uri)
            removed.append(name)
    if not storage.is_gcs(out_dir):
        for name in sorted(stale.folders | planned.folders):  # staging: pieces of killed runs
            shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)
        _remove_emptied_folders(out_dir, removed)
    shards = [name for name in removed if SHARD_NAME.match(name)]
    if shards:
        log.info("removed %d shard file(s) of an earlier run", len(shards))
    _write_record(out_dir, planned)
    return removed


def _remove_emptied_folders(out_dir: str, removed: list[str]) -> None:
    """The folders that held removed files (old runs' `_parts/FINGERPRINT/`), once empty."""
    for name in removed:
        folder = os.path.dirname(name)
        while folder:
            try:
                os.rmdir(os.path.join(out_dir, folder))
            except OSError:  # not empty: it holds this run's parts, or files of the user's
                break
            folder = os.path.dirname(folder)


# ---------------------------------------------------------------- what is there, whose it is


def _present(out_dir: str) -> dict[str, bool]:
    """Names in out_dir and under its _parts/, relative to it: True for a folder."""
    if not storage.is_gcs(out_dir):
        return _present_local(out_dir)
    found = {storage.basename(uri): False for uri in storage.list_files(out_dir)}
    root = storage.join(out_dir, parts.PARTS_DIR)
    for uri in storage.list_files(root, recursive=True):
        found[f"{parts.PARTS_DIR}/{uri[len(root) + 1 :]}"] = False
    return found


def _present_local(out_dir: str) -> dict[str, bool]:
    if not os.path.isdir(out_dir):
        return {}
    found = {}
    with os.scandir(out_dir) as entries:
        for entry in entries:
            found[entry.name] = entry.is_dir(follow_symlinks=False)
    root = os.path.join(out_dir, parts.PARTS_DIR)
    if found.get(parts.PARTS_DIR):
        for folder, _dirs, files in os.walk(root):
            for name in files:
                relative = os.path.relpath(os.path.join(folder, name), out_dir)
                found[relative.replace(os.sep, "/")] = False
    return found


def _owned(out_dir: str, present: dict[str, bool]) -> Names:
    """What earlier runs of ours wrote here, by every record we have."""
    owned = _read_record(out_dir) | _named_by_our_manifest(out_dir, present)
    ours_by_format = {
        name for name in present if _PART_PATH.match(name) and _is_our_part(out_dir, name, owned)
    }
    return owned | Names(frozenset(ours_by_format))


def _read_record(out_dir: str) -> Names:
    uri = storage.join(out_dir, WRITTEN_NAME)
    try:
        data = storage.read_json(uri)
    except FileNotFoundError:
        return Names()
    except (ValueError, UnicodeDecodeError, IsADirectoryError) as exc:
        raise _not_our_record(uri) from exc
    if not isinstance(data, dict) or data.get("format") != WRITTEN_FORMAT:
        raise _not_our_record(uri)
    files = [n for n in data.get("files", []) if _is_inside(n)]
    folders = [n for n in data.get("folders", []) if _is_inside(n)]
    return Names(frozenset(files), frozenset(folders))


def _not_our_record(uri: str) -> UserError:
    return UserError(
        f"{uri} is not preprocess's record of the files it wrote there; move it away or "
        "choose another --out."
    )


def _named_by_our_manifest(out_dir: str, present: dict[str, bool]) -> Names:
    """A dataset.json of ours: itself and labels.txt, and for our own runs its shards and parts."""
    if manifest.MANIFEST_NAME not in present:
        return Names()
    try:
        data = storage.read_json(manifest.manifest_uri(out_dir))
    except (FileNotFoundError, ValueError, UnicodeDecodeError, IsADirectoryError):
        return Names()
    if not isinstance(data, dict) or data.get("format") != manifest.FORMAT:
        return Names()
    names = {manifest.MANIFEST_NAME, manifest.LABELS_NAME}
    source = data.get("source") if isinstance(data.get("source"), dict) else {}
    if source.get("tool") == TOOL:  # adopt's dataset.json lists shards the user made
        for info in (data.get("splits") or {}).values():
            names.update(n for n in info.get("shards", []) if isinstance(n, str) and "/" not in n)
        fingerprint, count = source.get("fingerprint"), source.get("task_count")
        if isinstance(fingerprint, str) and isinstance(count, int) and count > 1:
            names.update(parts.part_name(fingerprint, i, count) for i in range(count))
    return Names(frozenset(n for n in names if _is_inside(n)))


def _is_our_part(out_dir: str, name: str, owned: Names) -> bool:
    """A part file of a run of ours that no record names (a killed run of an older version)."""
    if name in owned:
        return True
    match = _PART_PATH.match(name)
    assert match is not None
    try:
        data = storage.read_json(storage.join(out_dir, name))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and [
        data.get("fingerprint"),
        data.get("task_index"),
        data.get("task_count"),
    ] == [match[1], int(match[2]), int(match[3])]


def _is_inside(name: object) -> bool:
    """A relative path that stays inside the output folder (records are data, not trusted)."""
    if not isinstance(name, str) or not name or name.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


# ---------------------------------------------------------------- refusing, recording


def _refuse_collisions(
    out_dir: str,
    planned: Names,
    present: dict[str, bool],
    owned: Names,
    labels: list[str],
    task_count: int,
) -> None:
    for name in sorted(set(present) - owned.files - owned.folders):
        uri = storage.join(out_dir, name)
        if name == manifest.LABELS_NAME and not present[name] and _same_labels(uri, labels):
            continue  # overwriting it with the same lines loses nothing
        in_parts = name.startswith(parts.PARTS_DIR + "/") and task_count > 1
        if not (name in planned or in_parts) or not storage.exists(uri):
            continue  # out of our way, or removed since the listing (by a finishing sibling)
        if name in planned:
            raise UserError(_collision(out_dir, uri, name))
        raise UserError(
            f"{uri} was not written by preprocess, and {out_dir}/{parts.PARTS_DIR}/ is where "
            "the tasks of a run leave their results; move it away or choose another --out."
        )


def _collision(out_dir: str, uri: str, name: str) -> str:
    advice = "move it away or choose another --out"
    if SHARD_NAME.match(name):
        advice += (
            f" (if it is a classic shard, `python -m preprocess adopt --dir {out_dir}` makes "
            "a dataset of them as they are)"
        )
    return (
        f"{uri} was not written by preprocess (no dataset.json or record of ours names it) and "
        f"this run would overwrite it; {advice}."
    )


def _same_labels(uri: str, labels: list[str]) -> bool:
    try:
        text = storage.read_text(uri)
    except (FileNotFoundError, UnicodeDecodeError, IsADirectoryError):
        return False
    return [line.strip() for line in text.splitlines() if line.strip()] == labels


def _warn_about_foreign_shards(out_dir: str, present: dict[str, bool], ours: Names) -> None:
    foreign = sorted(name for name in present if SHARD_NAME.match(name) and name not in ours)
    if foreign:
        log.warning(
            "%s holds %d shard file(s) that no run of ours wrote (e.g. %s); they are left "
            "alone and are not part of this dataset",
            out_dir,
            len(foreign),
            foreign[0],
        )


def _write_record(out_dir: str, names: Names) -> None:
    """Record names (before any of them is written).

    Every task of a run records the same planned names, so tasks that record at once lose
    nothing of each other's; and because a run lists the folder before it reads this record,
    every file it sees was recorded before it was created.
    """
    storage.write_text(
        storage.join(out_dir, WRITTEN_NAME),
        json.dumps(
            {
                "format": WRITTEN_FORMAT,
                "tool": TOOL,
                "about": "files that preprocess wrote here and may replace or delete",
                "files": sorted(names.files),
                "folders": sorted(names.folders),
            },
            indent=2,
        )
        + "\n",
    )
