"""What preprocess may delete or overwrite in --out: only what a run of ours wrote there.

Ownership is recorded (our previous dataset.json, our record of written files), never guessed
from a file's name: classic shards and anything the user keeps under `_parts/` stay, and a
foreign file under a name this run would write stops the run before anything is written.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from common import manifest, storage
from common.cli import UserError
from preprocess import pool
from preprocess.build import Options, build
from tests import imagefiles

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSIC = {
    "train-00000-of-01024": b"a classic shard",
    "train-00001-of-01024": b"another classic shard",
    "validation-00000-of-00128": b"a classic validation shard",
}
USER_PARTS = {
    "_parts/0123456789abcdef/part-00000-of-00002.json": b'{"mine": true}\n',
    "_parts/notes.txt": b"my notes",
}


def images(tmp_path) -> tuple[str, str]:  # noqa: ANN001
    train = imagefiles.make_folder(str(tmp_path / "train"), {"a": 4, "b": 4})
    val = imagefiles.make_folder(str(tmp_path / "val"), {"a": 1, "b": 1}, size=(40, 32))
    return train, val


def names(out: str) -> set[str]:
    """Every file under out, relative to it (hidden ones too)."""
    root = storage.normalize(out)
    return {uri[len(root) + 1 :] for uri in storage.list_files(root, recursive=True)}


def shards(out: str) -> set[str]:
    return {n for n in names(out) if n.startswith(("train-", "validation-"))}


def put(out: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        storage.write_bytes(storage.join(out, name), data)


def assert_kept(out: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert storage.read_bytes(storage.join(out, name)) == data, name


class Killed(BaseException):
    """Stands for SIGKILL: nothing of the run's own clean-up happens after it."""


def kill_after(monkeypatch: pytest.MonkeyPatch, published: int) -> None:
    """Let the run publish this many shards, then die at the next one."""
    calls = []
    real = pool.publish

    def publish(pieces: list[str], uri: str) -> object:
        if len(calls) == published:
            raise Killed
        calls.append(uri)
        return real(pieces, uri)

    monkeypatch.setattr(pool, "publish", publish)


# ---------------------------------------------------------------- never deleted


def test_classic_shards_and_user_files_under_parts_are_never_deleted(tmp_path, bucket_root) -> None:  # noqa: ANN001
    train, val = images(tmp_path)
    out = storage.join(bucket_root, "ds")
    put(out, {**CLASSIC, **USER_PARTS})

    build(Options(train, val, out, train_shards=2))
    build(Options(train, val, out, train_shards=3))  # a rerun removes our first run's shards

    assert_kept(out, {**CLASSIC, **USER_PARTS})
    ours = {"train-00000-of-00003", "train-00001-of-00003", "train-00002-of-00003"}
    assert shards(out) == {*CLASSIC, *ours, "validation-00000-of-00001"}
    assert manifest.load(out).splits["train"].shards == sorted(ours)


def test_a_killed_run_of_ours_leaves_the_folder_usable_for_the_next(
    tmp_path,
    bucket_root,
    monkeypatch,  # noqa: ANN001
) -> None:
    train, val = images(tmp_path)
    out = storage.join(bucket_root, "ds")
    put(out, CLASSIC)
    build(Options(train, val, out, train_shards=3))
    kill_after(monkeypatch, 2)
    with pytest.raises(Killed):
        build(Options(train, val, out, train_shards=5))
    monkeypatch.undo()
    assert "dataset.json" not in names(out)
    assert {"train-00000-of-00005", "train-00001-of-00005"} <= shards(out)

    build(Options(train, val, out, train_shards=4))  # neither the 3 nor the 5 survive

    ours = {f"train-0000{i}-of-00004" for i in range(4)}
    assert shards(out) == {*CLASSIC, *ours, "validation-00000-of-00001"}
    assert_kept(out, CLASSIC)
    assert manifest.load(out).splits["train"].count == 8


def test_a_dataset_of_an_earlier_version_is_replaced_by_its_manifest(tmp_path, bucket_root) -> None:  # noqa: ANN001
    """Before the record of written files existed, our dataset.json alone said what was ours."""
    train, val = images(tmp_path)
    out = storage.join(bucket_root, "ds")
    build(Options(train, val, out, train_shards=3))
    for name in names(out) - shards(out) - {"dataset.json", "labels.txt"}:
        storage.delete(storage.join(out, name))

    build(Options(train, val, out, train_shards=2))

    assert shards(out) == {
        "train-00000-of-00002",
        "train-00001-of-00002",
        "validation-00000-of-00001",
    }


def test_parts_of_our_earlier_runs_go_and_others_stay(tmp_path, bucket_root) -> None:  # noqa: ANN001
    train, val = images(tmp_path)
    out = storage.join(bucket_root, "ds")
    for task in range(2):
        build(Options(train, val, out, train_shards=2, task_index=task, task_count=2))
    first = {n for n in names(out) if n.startswith("_parts/")}
    assert len(first) == 2
    for task in (1, 0):
        build(Options(train, val, out, train_shards=3, task_index=task, task_count=2))
    second = {n for n in names(out) if n.startswith("_parts/")}
    assert len(second) == 2 and not first & second
    put(out, {"_parts/notes.txt": b"my notes"})

    build(Options(train, val, out, train_shards=3))

    assert {n for n in names(out) if n.startswith("_parts/")} == {"_parts/notes.txt"}
    assert_kept(out, {"_parts/notes.txt": b"my notes"})


# ---------------------------------------------------------------- collisions: one sentence


def test_a_foreign_file_under_a_name_we_would_write_stops_the_run(tmp_path, bucket_root) -> None:  # noqa: ANN001
    train, val = images(tmp_path)
    fresh = storage.join(bucket_root, "fresh")
    put(fresh, {"train-00001-of-00002": b"classic"})
    with pytest.raises(UserError, match=r"train-00001-of-00002 .*adopt"):
        build(Options(train, val, fresh, train_shards=2))
    assert names(fresh) == {"train-00001-of-00002"}

    ours = storage.join(bucket_root, "ours")
    build(Options(train, val, ours, train_shards=3))
    before = {name: storage.read_bytes(storage.join(ours, name)) for name in names(ours)}
    put(ours, {"train-00000-of-00002": b"classic"})
    with pytest.raises(UserError, match="train-00000-of-00002"):
        build(Options(train, val, ours, train_shards=2))
    assert_kept(ours, {**before, "train-00000-of-00002": b"classic"})
    assert names(ours) == {*before, "train-00000-of-00002"}
    assert manifest.load(ours).splits["train"].count == 8  # the old dataset is still whole


@pytest.mark.parametrize(
    "files",
    [
        {"_parts/notes.txt": b"my notes"},
        {"labels.txt": b"cat\ndog\n"},
        {"dataset.json": b'{"my": "own file"}\n'},
    ],
    ids=["parts", "labels", "manifest"],
)
def test_foreign_files_in_our_places_stop_the_run(tmp_path, bucket_root, files) -> None:  # noqa: ANN001
    train, val = images(tmp_path)
    out = storage.join(bucket_root, "ds")
    put(out, files)
    name = next(iter(files))

    with pytest.raises(UserError, match=name.split("/")[0]):
        build(Options(train, val, out, train_shards=2, task_count=2))

    assert names(out) == set(files)
    assert_kept(out, files)


def test_a_labels_txt_with_our_very_content_is_no_obstacle(tmp_path) -> None:  # noqa: ANN001
    train, val = images(tmp_path)
    out = str(tmp_path / "ds")
    put(out, {"labels.txt": b"a\n b \n\n"})

    build(Options(train, val, out, labels_file=f"{out}/labels.txt"))

    assert manifest.load(out).labels == ["a", "b"]


def test_a_folder_under_a_shard_name_stops_the_run_before_writing(tmp_path) -> None:  # noqa: ANN001
    train, val = images(tmp_path)
    out = str(tmp_path / "ds")
    os.makedirs(f"{out}/train-00001-of-00002/inside")

    with pytest.raises(UserError, match="train-00001-of-00002"):
        build(Options(train, val, out, train_shards=2))

    assert sorted(os.listdir(out)) == ["train-00001-of-00002"]


def test_the_command_line_says_it_in_one_sentence(tmp_path) -> None:  # noqa: ANN001
    train, val = images(tmp_path)
    out = str(tmp_path / "ds")
    put(out, {"train-00000-of-00001": b"classic"})

    result = subprocess.run(
        [sys.executable, "-m", "preprocess", "--train-dir", train, "--val-dir", val, "--out", out],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )

    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[-1].startswith("error: ") and "train-00000-of-00001" in lines[-1]
    assert not [line for line in lines if "Traceback" in line]
    assert sorted(os.listdir(out)) == ["train-00000-of-00001"]
