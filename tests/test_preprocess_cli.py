"""`python -m preprocess` as a user runs it: exit codes, messages, and what is left on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from common import manifest, records, storage
from preprocess import sample
from preprocess.build import Options, build
from preprocess.output import WRITTEN_NAME
from tests import imagefiles

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "preprocess", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def folders(tmp_path, train: dict[str, int], val: dict[str, int]) -> tuple[str, str]:  # noqa: ANN001
    return (
        imagefiles.make_folder(str(tmp_path / "train"), train),
        imagefiles.make_folder(str(tmp_path / "val"), val),
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ---------------------------------------------------------------- every bad input: one line


def _missing_train(tmp_path) -> list[str]:  # noqa: ANN001
    _, val = folders(tmp_path, {}, {"a": 1})
    return ["--train-dir", str(tmp_path / "nope"), "--val-dir", val]


def _no_class_folders(tmp_path) -> list[str]:  # noqa: ANN001
    _, val = folders(tmp_path, {}, {"a": 1})
    imagefiles.write_file(str(tmp_path / "flat" / "photo.jpg"), imagefiles.jpeg())
    imagefiles.write_file(str(tmp_path / "flat" / ".DS_Store"), b"x")
    return ["--train-dir", str(tmp_path / "flat"), "--val-dir", val]


def _val_class_not_in_train(tmp_path) -> list[str]:  # noqa: ANN001
    train, val = folders(tmp_path, {"a": 2}, {"a": 1, "b": 1})
    return ["--train-dir", train, "--val-dir", val]


def _empty_train_class(tmp_path) -> list[str]:  # noqa: ANN001
    train, val = folders(tmp_path, {"a": 2}, {"a": 1})
    imagefiles.write_file(f"{train}/b/Thumbs.db", b"litter only")
    return ["--train-dir", train, "--val-dir", val]


def _empty_val(tmp_path) -> list[str]:  # noqa: ANN001
    train, _ = folders(tmp_path, {"a": 2}, {})
    os.makedirs(tmp_path / "val" / "a")
    return ["--train-dir", train, "--val-dir", str(tmp_path / "val")]


def _listed_label_without_images(tmp_path) -> list[str]:  # noqa: ANN001
    train, val = folders(tmp_path, {"a": 2}, {"a": 1})
    labels = imagefiles.write_file(str(tmp_path / "labels.txt"), b"a\nzebra\n")
    return ["--train-dir", train, "--val-dir", val, "--labels-file", labels]


def _missing_labels_file(tmp_path) -> list[str]:  # noqa: ANN001
    train, val = folders(tmp_path, {"a": 2}, {"a": 1})
    return ["--train-dir", train, "--val-dir", val, "--labels-file", str(tmp_path / "no.txt")]


def _label_listed_twice(tmp_path) -> list[str]:  # noqa: ANN001
    train, val = folders(tmp_path, {"a": 2}, {"a": 1})
    labels = imagefiles.write_file(str(tmp_path / "labels.txt"), b"a\na\n")
    return ["--train-dir", train, "--val-dir", val, "--labels-file", labels]


def _class_folder_with_a_newline(tmp_path) -> list[str]:  # noqa: ANN001
    """A folder named "a\\nb" would be two lines of labels.txt and shift every later class id."""
    train, val = folders(tmp_path, {"a\nb": 2, "c": 2}, {"c": 1})
    return ["--train-dir", train, "--val-dir", val]


def _label_with_a_control_character(tmp_path) -> list[str]:  # noqa: ANN001
    train, val = folders(tmp_path, {"a": 2}, {"a": 1})
    labels = imagefiles.write_file(str(tmp_path / "labels.txt"), b"a\nb\x0bc\n")
    return ["--train-dir", train, "--val-dir", val, "--labels-file", labels]


def _output_under_a_file(tmp_path) -> list[str]:  # noqa: ANN001
    train, val = folders(tmp_path, {"a": 2}, {"a": 1})
    imagefiles.write_file(str(tmp_path / "out"), b"a file, not a folder")
    return ["--train-dir", train, "--val-dir", val, "--out", str(tmp_path / "out" / "ds")]


def _output_inside_train(tmp_path) -> list[str]:  # noqa: ANN001
    train, val = folders(tmp_path, {"a": 2}, {"a": 1})
    return ["--train-dir", train, "--val-dir", val, "--out", f"{train}/dataset"]


def _flag(*extra: str) -> Callable:
    def make(tmp_path) -> list[str]:  # noqa: ANN001
        train, val = folders(tmp_path, {"a": 2}, {"a": 1})
        return ["--train-dir", train, "--val-dir", val, *extra]

    return make


ERROR_CASES = {
    "missing train dir": (_missing_train, "does not exist"),
    "train dir without class folders": (_no_class_folders, "no class sub-folders"),
    "validation class absent from train": (_val_class_not_in_train, "'b'"),
    "empty train class": (_empty_train_class, "'b'"),
    "empty val dir": (_empty_val, "val dir"),
    "listed label without images": (_listed_label_without_images, "'zebra'"),
    "missing labels file": (_missing_labels_file, "does not exist"),
    "label listed twice": (_label_listed_twice, "twice"),
    "class folder with a newline": (_class_folder_with_a_newline, "control character ('\\n')"),
    "label with a control character": (_label_with_a_control_character, "'b\\x0bc'"),
    "output under a file": (_output_under_a_file, "cannot write"),
    "output inside the train dir": (_output_inside_train, "inside --train-dir"),
    "zero workers": (_flag("--workers", "0"), "--workers"),
    "negative max side": (_flag("--max-side", "-5"), "--max-side"),
    "word for a number": (_flag("--train-shards", "many"), "--train-shards"),
    "task index out of range": (_flag("--task-index", "2", "--task-count", "2"), "out of range"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_bad_input_exits_with_one_sentence_and_writes_nothing(tmp_path, case: str) -> None:  # noqa: ANN001
    make, words = ERROR_CASES[case]
    args = make(tmp_path)
    if "--out" not in args:
        args += ["--out", str(tmp_path / "dataset")]
    out = args[args.index("--out") + 1]

    line = one_error_line(cli(*args))

    assert words in line
    assert not os.path.exists(out)


def test_missing_required_flag_and_bad_job_index(tmp_path) -> None:  # noqa: ANN001
    assert "--out" in one_error_line(cli("--train-dir", "x", "--val-dir", "y"))
    train, val = folders(tmp_path, {"a": 1}, {"a": 1})
    args = ["--train-dir", train, "--val-dir", val, "--out", str(tmp_path / "o")]
    line = one_error_line(cli(*args, env={"JOB_COMPLETION_INDEX": "seven"}))
    assert "JOB_COMPLETION_INDEX" in line


def test_missing_bucket_is_one_sentence(tmp_path, gcs) -> None:  # noqa: ANN001
    train, val = folders(tmp_path, {"a": 1}, {"a": 1})
    line = one_error_line(
        cli("--train-dir", train, "--val-dir", val, "--out", "gs://no-such-bucket/ds", env=gcs.env)
    )
    assert "gs://no-such-bucket" in line
    line = one_error_line(
        cli("--train-dir", "gs://no-such-bucket/train", "--val-dir", val, "--out", str(tmp_path))
    )
    assert "gs://no-such-bucket" in line


def test_help_names_every_flag_and_command() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for flag in (
        "--train-dir", "--val-dir", "--out", "--labels-file", "--train-shards", "--val-shards",
        "--workers", "--max-side", "--strict", "--task-index", "--task-count", "adopt", "sample",
    ):  # fmt: skip
        assert flag in result.stdout
    for command in ("sample", "adopt"):
        assert cli(command, "--help").returncode == 0


# ---------------------------------------------------------------- runs


def test_skipped_files_are_reported_and_strict_fails(tmp_path) -> None:  # noqa: ANN001
    train, val = folders(tmp_path, {"a": 3, "b": 3}, {"a": 1, "b": 1})
    bad = imagefiles.write_file(f"{train}/b/scan.jpg", b"%PDF-1.4 not a photo")
    imagefiles.write_file(f"{train}/b/.DS_Store", b"litter")
    args = ["--train-dir", train, "--val-dir", val]

    relaxed = cli(*args, "--out", str(tmp_path / "relaxed"))
    strict = cli(*args, "--out", str(tmp_path / "strict"), "--strict")

    assert relaxed.returncode == 0, relaxed.stderr
    assert f"{bad}: not an image" in relaxed.stderr
    assert ".DS_Store" not in relaxed.stderr
    assert "train: 6 images" in relaxed.stderr and "images/s" in relaxed.stderr
    assert manifest.load(str(tmp_path / "relaxed")).skipped == [
        {"path": bad, "reason": manifest.load(str(tmp_path / "relaxed")).skipped[0]["reason"]}
    ]
    assert strict.returncode != 0
    assert strict.stderr.strip().splitlines()[-1].startswith("error: --strict: 1 file")
    assert not os.path.exists(tmp_path / "strict" / "dataset.json")


def test_a_terminal_gets_a_progress_bar_and_logs_get_none(tmp_path) -> None:  # noqa: ANN001
    train, val = folders(tmp_path, {"a": 20, "b": 20}, {"a": 1})
    args = [sys.executable, "-m", "preprocess", "--train-dir", train, "--val-dir", val]
    terminal, terminal_end = os.openpty()
    process = subprocess.Popen(
        [*args, "--out", str(tmp_path / "tty")], cwd=REPO, stdout=terminal_end, stderr=terminal_end
    )
    os.close(terminal_end)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the terminal closes when the process exits
            break
        if not chunk:
            break
        shown += chunk
    os.close(terminal)
    assert process.wait(timeout=60) == 0

    bar = shown.decode()
    for part in ("\r[", "/41 images", "images/s", "ETA"):
        assert part in bar, bar
    logged = cli(*args[3:], "--out", str(tmp_path / "log")).stderr
    assert "\r" not in logged and "[#" not in logged


def _all_records_intact(out: str) -> int:
    """Records in every file under a shard name; raises if any is cut short or damaged."""
    count = 0
    for name in os.listdir(out):
        if name.startswith(("train-", "validation-")):
            with open(os.path.join(out, name), "rb") as f:
                count += sum(1 for _ in records.iter_records(f))
    return count


def test_killed_run_leaves_no_manifest_and_the_rerun_cleans_up(tmp_path) -> None:  # noqa: ANN001
    train = imagefiles.make_folder(str(tmp_path / "train"), {"a": 150, "b": 150}, size=(320, 240))
    val = imagefiles.make_folder(str(tmp_path / "val"), {"a": 2, "b": 2})
    out = str(tmp_path / "out")
    build(Options(train, val, out, train_shards=3))
    args = ["--train-dir", train, "--val-dir", val, "--out", out, "--workers", "1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "preprocess", *args, "--train-shards", "10"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first_new_shard = os.path.join(out, "train-00000-of-00010")
    deadline = time.monotonic() + 60
    while not os.path.exists(first_new_shard) and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert os.path.exists(first_new_shard), "the run ended before it could be interrupted"
    assert not os.path.exists(os.path.join(out, "dataset.json"))
    assert not os.path.exists(os.path.join(out, "train-00009-of-00010"))
    _all_records_intact(out)  # nothing half-written under a shard's name

    rerun = cli(*args, "--train-shards", "10")
    assert rerun.returncode == 0, rerun.stderr
    result = manifest.load(out)
    expected = [*result.splits["train"].shards, "validation-00000-of-00001", WRITTEN_NAME]
    assert sorted(os.listdir(out)) == sorted([*expected, "dataset.json", "labels.txt"])
    assert _all_records_intact(out) == 304


def test_two_tasks_at_once_publish_one_dataset(tmp_path) -> None:  # noqa: ANN001
    train, val = folders(tmp_path, {"a": 10, "b": 8}, {"a": 2, "b": 2})
    single = str(tmp_path / "single")
    build(Options(train, val, single, train_shards=3))
    out = str(tmp_path / "split")
    args = ["--train-dir", train, "--val-dir", val, "--out", out, "--train-shards", "3"]
    tasks = [
        subprocess.Popen(
            [sys.executable, "-m", "preprocess", *args, "--task-count", "2", "--workers", "1"],
            cwd=REPO,
            env={**os.environ, "JOB_COMPLETION_INDEX": str(index)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in (0, 1)
    ]
    for task in tasks:
        _, err = task.communicate(timeout=120)
        assert task.returncode == 0, err

    assert manifest.load(out).splits == manifest.load(single).splits
    for name in manifest.load(single).shard_uris(single, "train"):
        with open(name, "rb") as a, open(os.path.join(out, os.path.basename(name)), "rb") as b:
            assert a.read() == b.read()


def test_gcs_run_with_worker_processes(tmp_path, gcs_bucket, gcs) -> None:  # noqa: ANN001
    train, val = folders(tmp_path, {"a": 6, "b": 5}, {"a": 2, "b": 2})
    for path in (
        *storage.list_files(train, recursive=True),
        *storage.list_files(val, recursive=True),
    ):
        with open(path, "rb") as f:
            storage.write_bytes(f"{gcs_bucket}/in/{os.path.relpath(path, tmp_path)}", f.read())
    local = str(tmp_path / "local")
    build(Options(train, val, local, train_shards=3))
    remote = f"{gcs_bucket}/datasets/pets"

    result = cli(
        "--train-dir", f"{gcs_bucket}/in/train", "--val-dir", f"{gcs_bucket}/in/val",
        "--out", remote, "--train-shards", "3", "--workers", "2", env=gcs.env,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert manifest.load(remote).splits == manifest.load(local).splits
    for name in manifest.load(local).splits["train"].shards:
        with open(os.path.join(local, name), "rb") as f:
            assert storage.read_bytes(f"{remote}/{name}") == f.read()


# ---------------------------------------------------------------- sample images


def test_sample_command_makes_a_folder_preprocess_accepts(tmp_path) -> None:  # noqa: ANN001
    out = str(tmp_path / "images")
    args = ("sample", "--out", out, "--per-class", "4", "--size", "48")

    first = cli(*args)
    files = sorted(storage.list_files(out, recursive=True))
    contents = {}
    for path in files:
        with open(path, "rb") as f:
            contents[path] = f.read()
    again = cli(*args)

    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    for path, data in contents.items():  # same seed, same images
        with open(path, "rb") as f:
            assert f.read() == data
    images = [p for p in files if not os.path.basename(p).startswith(".")]
    classes = len(sample.CLASSES)
    assert len(images) == classes * 4 + classes * 2
    assert any(p.endswith(".png") for p in images) and any(p.endswith(".jpg") for p in images)
    build(Options(f"{out}/train", f"{out}/val", str(tmp_path / "ds")))
    result = manifest.load(str(tmp_path / "ds"))
    assert result.labels == sorted(sample.CLASSES)
    assert result.splits["train"].count == classes * 4 and not result.skipped


def test_sample_refuses_a_folder_with_other_files(tmp_path) -> None:  # noqa: ANN001
    mine = imagefiles.write_file(str(tmp_path / "holiday" / "beach.jpg"), b"my photo")
    line = one_error_line(cli("sample", "--out", str(tmp_path / "holiday")))
    assert "holiday" in line
    with open(mine, "rb") as f:
        assert f.read() == b"my photo"
