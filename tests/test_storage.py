"""common.storage behaves the same on a local folder and on gs:// (the real emulator)."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from common import storage
from common.storage import StorageError, join

# ---------------------------------------------------------------- reading and writing


def test_bytes_text_json_round_trip(bucket_root: str) -> None:
    storage.write_bytes(join(bucket_root, "a", "b.bin"), b"\x00\x01binary\xff")
    storage.write_text(join(bucket_root, "t.txt"), "héllo\nwörld")
    storage.write_json(join(bucket_root, "d", "m.json"), {"classes": ["cat", "dög"], "n": 3})

    assert storage.read_bytes(join(bucket_root, "a", "b.bin")) == b"\x00\x01binary\xff"
    assert storage.read_text(join(bucket_root, "t.txt")) == "héllo\nwörld"
    assert storage.read_json(join(bucket_root, "d", "m.json")) == {
        "classes": ["cat", "dög"],
        "n": 3,
    }
    assert storage.read_text(join(bucket_root, "d", "m.json")).endswith("\n")


def test_read_missing_raises_file_not_found(bucket_root: str) -> None:
    missing = join(bucket_root, "nothing", "here.json")
    for read in (storage.read_bytes, storage.read_text, storage.read_json, storage.size,
                 storage.modified):  # fmt: skip
        with pytest.raises(FileNotFoundError):
            read(missing)


def test_exists_and_size(bucket_root: str) -> None:
    uri = join(bucket_root, "sized.bin")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"x" * 1234)
    assert storage.exists(uri)
    assert storage.size(uri) == 1234
    storage.write_bytes(uri, b"")
    assert storage.exists(uri)
    assert storage.size(uri) == 0


def test_modified_is_when_it_was_written(bucket_root: str) -> None:
    uri = join(bucket_root, "ckpt-10.index")
    before = time.time()
    storage.write_bytes(uri, b"x")
    # The emulator's and the filesystem's clocks are this machine's; a real bucket's is close.
    assert before - 2 <= storage.modified(uri) <= time.time() + 2


def test_overwrite_replaces_whole_object_and_leaves_no_temporaries(bucket_root: str) -> None:
    uri = join(bucket_root, "state.json")
    storage.write_json(uri, {"version": 1, "pad": "x" * 10_000})
    storage.write_json(uri, {"version": 2})
    assert storage.read_json(uri) == {"version": 2}
    assert storage.list_files(bucket_root) == [uri]


def test_local_write_goes_through_a_hidden_sibling(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    target = tmp_path / "out" / "model.json"
    seen: list[tuple[str, str, list[str]]] = []
    real_replace = os.replace

    def spying_replace(src, dst):  # noqa: ANN001, ANN202
        seen.append((str(src), str(dst), sorted(os.listdir(os.path.dirname(dst)))))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spying_replace)
    storage.write_text(str(target), "new")
    ((src, dst, listing),) = seen
    assert dst == str(target)
    assert os.path.dirname(src) == str(target.parent)
    assert os.path.basename(src).startswith(".model.json.")
    assert listing == [os.path.basename(src)]  # the target itself did not exist yet
    assert os.listdir(target.parent) == ["model.json"]


class _Interrupted(Exception):
    """Stands for a crash or a lost connection in the middle of a write."""


def _interrupt_writes(monkeypatch, root: str) -> None:  # noqa: ANN001
    """Make every object write fail half-way through sending its data."""
    if not storage.is_gcs(root):

        def failing_fsync(fd: int) -> None:
            raise _Interrupted("disk went away")

        monkeypatch.setattr(os, "fsync", failing_fsync)
        return
    session = storage._client()._http
    real_request = session.request

    def half_sent(method, url, data=None, headers=None, **kwargs):  # noqa: ANN001, ANN202
        if method in ("POST", "PUT") and ("uploadType=multipart" in url or "upload_id=" in url):
            payload = bytes(data)

            def body():  # noqa: ANN202
                yield payload[: len(payload) // 2]
                raise _Interrupted("connection lost mid-upload")

            headers = {k: v for k, v in (headers or {}).items() if k.lower() != "content-length"}
            return real_request(method, url, data=body(), headers=headers, **kwargs)
        return real_request(method, url, data=data, headers=headers, **kwargs)

    monkeypatch.setattr(session, "request", half_sent)


def test_interrupted_write_leaves_the_old_content(bucket_root: str, monkeypatch, tmp_path) -> None:  # noqa: ANN001
    uri = join(bucket_root, "dir", "labels.txt")
    storage.write_text(uri, "old\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))  # a resumable upload on GCS
    big_uri = join(bucket_root, "dir", "big.bin")
    storage.write_bytes(big_uri, b"old big")

    with monkeypatch.context() as m:
        _interrupt_writes(m, bucket_root)
        with pytest.raises(_Interrupted):
            storage.write_text(uri, "new content that never lands\n" * 1000)
        with pytest.raises(_Interrupted):
            storage.upload_file(str(big), big_uri)

    assert storage.read_text(uri) == "old\n"
    assert storage.read_bytes(big_uri) == b"old big"
    assert storage.list_files(join(bucket_root, "dir")) == [big_uri, uri]


def test_reader_never_sees_a_partial_object(bucket_root: str) -> None:
    uri = join(bucket_root, "shared.bin")
    versions = [bytes([65 + i]) * (2 * 1024 * 1024) for i in range(3)]
    storage.write_bytes(uri, versions[0])
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(1, 12):
                storage.write_bytes(uri, versions[i % len(versions)])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set() or reads < 3:
        assert storage.read_bytes(uri) in versions
        reads += 1
    thread.join()
    assert not errors


def test_if_absent_creates_only_once(bucket_root: str) -> None:
    uri = join(bucket_root, "lock.json")
    storage.write_json(uri, {"owner": "first"}, if_absent=True)
    with pytest.raises(FileExistsError):
        storage.write_json(uri, {"owner": "second"}, if_absent=True)
    with pytest.raises(FileExistsError):
        storage.write_bytes(uri, b"third", if_absent=True)
    assert storage.read_json(uri) == {"owner": "first"}
    storage.write_json(uri, {"owner": "overwritten"})  # a plain write still replaces it
    assert storage.read_json(uri) == {"owner": "overwritten"}


def test_if_absent_race_has_exactly_one_winner(bucket_root: str) -> None:
    uri = join(bucket_root, "claim.txt")
    start = threading.Barrier(6)
    results: dict[int, str] = {}

    def claim(i: int) -> None:
        start.wait()
        try:
            storage.write_text(uri, f"claimed by {i}", if_absent=True)
            results[i] = "won"
        except FileExistsError:
            results[i] = "lost"

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r == "won"]
    assert len(results) == 6 and len(winners) == 1
    assert storage.read_text(uri) == f"claimed by {winners[0]}"


# ---------------------------------------------------------------- listing


def _tree(root: str) -> dict[str, str]:
    files = {
        "a.txt": join(root, "a.txt"),
        "b.bin": join(root, "b.bin"),
        "c.txt": join(root, "sub", "c.txt"),
        "d.txt": join(root, "sub", "deeper", "d.txt"),
        "e.txt": join(root, "sub2", "e.txt"),
        "near": join(root + "x", "not-under-root.txt"),  # a sibling sharing the prefix
    }
    for name, uri in files.items():
        storage.write_text(uri, name)
    return files


def test_list_files(bucket_root: str) -> None:
    f = _tree(bucket_root)
    top = [f["a.txt"], f["b.bin"]]
    everything = sorted([f["a.txt"], f["b.bin"], f["c.txt"], f["d.txt"], f["e.txt"]])
    assert storage.list_files(bucket_root) == top
    assert storage.list_files(bucket_root + "/") == top
    assert storage.list_files(bucket_root, recursive=True) == everything
    assert storage.list_files(join(bucket_root, "sub")) == [f["c.txt"]]
    assert storage.list_files(join(bucket_root, "sub"), recursive=True) == [f["c.txt"], f["d.txt"]]
    assert storage.list_files(join(bucket_root, "su")) == []  # a name prefix is no directory
    assert storage.list_files(join(bucket_root, "missing")) == []
    assert storage.list_files(join(bucket_root, "missing"), recursive=True) == []


def test_list_dirs_and_is_dir(bucket_root: str) -> None:
    f = _tree(bucket_root)
    assert storage.list_dirs(bucket_root) == [join(bucket_root, "sub"), join(bucket_root, "sub2")]
    assert storage.list_dirs(bucket_root + "/") == [
        join(bucket_root, "sub"),
        join(bucket_root, "sub2"),
    ]
    assert storage.list_dirs(join(bucket_root, "sub")) == [join(bucket_root, "sub", "deeper")]
    assert storage.list_dirs(join(bucket_root, "sub", "deeper")) == []
    assert storage.list_dirs(join(bucket_root, "missing")) == []

    assert storage.is_dir(bucket_root)
    assert storage.is_dir(join(bucket_root, "sub"))
    assert storage.is_dir(join(bucket_root, "sub", "deeper") + "/")
    assert not storage.is_dir(f["a.txt"])
    assert not storage.is_dir(join(bucket_root, "su"))
    assert not storage.is_dir(join(bucket_root, "missing"))


def test_list_whole_bucket(gcs_bucket: str) -> None:
    storage.write_text(join(gcs_bucket, "top.txt"), "t")
    storage.write_text(join(gcs_bucket, "d", "in.txt"), "i")
    assert storage.list_files(gcs_bucket) == [f"{gcs_bucket}/top.txt"]
    assert storage.list_files(gcs_bucket + "/", recursive=True) == [
        f"{gcs_bucket}/d/in.txt",
        f"{gcs_bucket}/top.txt",
    ]
    assert storage.list_dirs(gcs_bucket) == [f"{gcs_bucket}/d"]
    assert storage.is_dir(gcs_bucket)


# ---------------------------------------------------------------- delete, copy, upload


def test_delete(bucket_root: str) -> None:
    uri = join(bucket_root, "gone.txt")
    storage.write_text(uri, "bye")
    storage.delete(uri)
    assert not storage.exists(uri)
    storage.delete(uri)  # missing_ok=True by default
    storage.delete(uri, missing_ok=True)
    with pytest.raises(FileNotFoundError):
        storage.delete(uri, missing_ok=False)


def test_copy_within_a_backend(bucket_root: str) -> None:
    src, dst = join(bucket_root, "src.bin"), join(bucket_root, "copies", "dst.bin")
    storage.write_bytes(src, b"payload" * 100)
    storage.copy(src, dst)
    assert storage.read_bytes(dst) == b"payload" * 100
    assert storage.read_bytes(src) == b"payload" * 100


def test_copy_between_local_and_gcs(gcs_bucket: str, tmp_path) -> None:  # noqa: ANN001
    local_src = tmp_path / "in.bin"
    local_src.write_bytes(b"\x00local\xff" * 1000)

    storage.copy(str(local_src), join(gcs_bucket, "up", "in.bin"))
    storage.copy(join(gcs_bucket, "up", "in.bin"), join(gcs_bucket, "again", "in.bin"))
    back = tmp_path / "down" / "in.bin"
    storage.copy(join(gcs_bucket, "again", "in.bin"), str(back))
    assert back.read_bytes() == local_src.read_bytes()
    assert storage.list_files(gcs_bucket, recursive=True) == [
        f"{gcs_bucket}/again/in.bin",
        f"{gcs_bucket}/up/in.bin",
    ]


def test_copy_across_gcs_buckets(gcs, gcs_bucket: str) -> None:  # noqa: ANN001
    other = gcs.make_bucket()
    storage.write_text(join(gcs_bucket, "x.txt"), "across")
    storage.copy(join(gcs_bucket, "x.txt"), join(other, "y", "x.txt"))
    assert storage.read_text(join(other, "y", "x.txt")) == "across"


def test_upload_file_larger_than_a_simple_upload(bucket_root: str, tmp_path) -> None:  # noqa: ANN001
    data = os.urandom(9 * 1024 * 1024 + 17)
    local = tmp_path / "weights.bin"
    local.write_bytes(data)
    uri = join(bucket_root, "models", "weights.bin")
    storage.upload_file(str(local), uri)
    assert storage.size(uri) == len(data)
    assert storage.read_bytes(uri) == data
    assert storage.list_files(join(bucket_root, "models")) == [uri]


def test_unicode_and_space_names(bucket_root: str) -> None:
    uri = join(bucket_root, "données", "chat noir – 猫.txt")
    storage.write_text(uri, "miaou")
    assert storage.exists(uri)
    assert storage.read_text(uri) == "miaou"
    assert storage.list_files(join(bucket_root, "données")) == [uri]
    assert storage.list_dirs(bucket_root) == [join(bucket_root, "données")]
    assert storage.basename(uri) == "chat noir – 猫.txt"
    storage.delete(uri, missing_ok=False)
    assert not storage.exists(uri)


# ---------------------------------------------------------------- checking a location


def test_check_writable_location_local(tmp_path) -> None:  # noqa: ANN001
    storage.check_writable_location(str(tmp_path / "not" / "yet" / "there"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="not a writable directory"):
        storage.check_writable_location(str(tmp_path / "file" / "below"))


def test_check_writable_location_gcs(gcs_bucket: str) -> None:
    storage.check_writable_location(gcs_bucket)
    storage.check_writable_location(join(gcs_bucket, "some", "prefix"))
    missing = gcs_bucket + "-missing"
    with pytest.raises(StorageError) as info:
        storage.check_writable_location(join(missing, "out"))
    message = str(info.value)
    assert message == f"bucket {missing} does not exist."


def test_check_writable_location_unreachable_fails_fast(gcs, monkeypatch) -> None:  # noqa: ANN001
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    # An outage, not a user error: exit 1 (a retry may pass), so a Job is not failed for good.
    with pytest.raises(storage.StorageUnavailable) as info:
        storage.check_writable_location("gs://some-bucket/out")
    assert time.monotonic() - started < 8
    message = str(info.value)
    assert message.startswith("cannot reach bucket gs://some-bucket: ")
    assert "\n" not in message and len(message) < 200


# ---------------------------------------------------------------- URI helpers


def test_uri_helpers() -> None:
    assert join("gs://b/", "x/", "/y") == "gs://b/x/y"
    assert join("gs://b/p", "x", "y.txt") == "gs://b/p/x/y.txt"
    assert storage.split_gcs("gs://b/a/b") == ("b", "a/b")
    assert storage.split_gcs("gs://b") == ("b", "")
    with pytest.raises(StorageError):
        storage.split_gcs("gs:///x")
    assert storage.normalize("gs://b/p/") == "gs://b/p"
    assert storage.normalize("file:///tmp/x/") == "/tmp/x"
    assert storage.basename("gs://b/p/name.txt/") == "name.txt"


def test_local_files_are_published_with_the_users_umask(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "_UMASK", 0o022)  # the umask the process started with
    for write in (
        lambda p: storage.write_json(p, {"a": 1}),
        lambda p: storage.upload_file(__file__, p),
    ):
        path = str(tmp_path / "published")
        write(path)
        assert os.stat(path).st_mode & 0o777 == 0o644  # not mkstemp's 0600
