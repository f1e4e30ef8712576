"""Shard sizes and CRC32C in dataset.json, and the check that finds a shard cut short."""

from __future__ import annotations

import base64
import json
import os

import google_crc32c
import pytest

from common import manifest, records, storage
from common.cli import UserError
from preprocess.adopt import adopt
from preprocess.build import Options, build
from tests import imagefiles


def crc32c_of(data: bytes) -> str:
    """As GCS reports it: base64 of the big-endian CRC32C."""
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def gcs_reported_crc32c(uri: str) -> str:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    bucket, key = storage.split_gcs(uri)
    client = gcs.Client(credentials=AnonymousCredentials(), project="test")
    return client.bucket(bucket).get_blob(key).crc32c


def dataset(tmp_path, bucket_root: str) -> tuple[str, manifest.Manifest]:  # noqa: ANN001
    train = imagefiles.make_folder(str(tmp_path / "train"), {"a": 5, "b": 4})
    val = imagefiles.make_folder(str(tmp_path / "val"), {"a": 1, "b": 1}, size=(40, 32))
    out = storage.join(bucket_root, "ds")
    # Worker processes fork from a server that keeps the environment it started with, so in
    # this process they may not know the emulator: gs:// output is written in-process here.
    workers = 1 if storage.is_gcs(out) else 2
    build(Options(train, val, out, train_shards=3, workers=workers))
    return out, manifest.load(out)


def truncate(uri: str, by: int = 7) -> None:
    storage.write_bytes(uri, storage.read_bytes(uri)[:-by])


def test_every_shard_has_its_size_and_crc32c(tmp_path, bucket_root) -> None:  # noqa: ANN001
    out, result = dataset(tmp_path, bucket_root)

    for split in records.SPLITS:
        info = result.splits[split]
        assert sorted(info.shard_bytes) == sorted(info.shards) == sorted(info.shard_crc32c)
        for name in info.shards:
            data = storage.read_bytes(storage.join(out, name))
            assert info.shard_bytes[name] == len(data)
            assert info.shard_crc32c[name] == crc32c_of(data)
            if storage.is_gcs(out):  # comparable with the object's metadata, unread
                assert info.shard_crc32c[name] == gcs_reported_crc32c(storage.join(out, name))
    assert result == manifest.load(out)
    manifest.check_shard_sizes(out, result, list(records.SPLITS))


def test_a_truncated_or_missing_shard_is_named(tmp_path, bucket_root) -> None:  # noqa: ANN001
    out, result = dataset(tmp_path, bucket_root)
    second = result.splits["train"].shards[1]
    truncate(storage.join(out, second))
    storage.delete(storage.join(out, result.splits["train"].shards[2]))
    size = result.splits["train"].shard_bytes[second]

    with pytest.raises(UserError) as caught:
        manifest.check_shard_sizes(out, result, ["train"])

    message = str(caught.value)
    assert message == (
        f"the shard {second} of {out} is {size - 7} bytes but dataset.json says {size}: it is "
        "truncated or was replaced; rerun preprocess or copy it again."
    )
    storage.write_bytes(storage.join(out, second), b"x" * size)  # same size: passes
    with pytest.raises(UserError, match=f"{result.splits['train'].shards[2]} of .* missing"):
        manifest.check_shard_sizes(out, result, ["train"])
    manifest.check_shard_sizes(out, result, ["validation"])  # only the splits asked for


def test_a_manifest_without_sizes_passes_unchecked_and_old_ones_load(tmp_path) -> None:  # noqa: ANN001
    out, result = dataset(tmp_path, str(tmp_path))
    data = result.to_dict()
    for info in data["splits"].values():
        del info["shard_bytes"], info["shard_crc32c"]
    del data["duplicates"]
    storage.write_text(manifest.manifest_uri(out), json.dumps(data))
    old = manifest.load(out)
    truncate(storage.join(out, old.splits["train"].shards[0]))

    manifest.check_shard_sizes(out, old, list(records.SPLITS))

    assert old.splits["train"].shard_bytes == {} and old.duplicates == {}


def classic_shard(uri: str, labels: list[int]) -> bytes:
    """A shard as build_image_data.py wrote it (labels from 1), without TensorFlow."""
    data = b"".join(
        records.frame_record(
            records.image_example(
                jpeg=imagefiles.jpeg(32, 24),
                height=24,
                width=32,
                filename=f"{i}.jpg",
                label=label,
                text=["", "daisy", "rose"][label],
            )
        )
        for i, label in enumerate(labels)
    )
    storage.write_bytes(uri, data)
    return data


def test_adopt_records_sizes_and_crc32c_too(bucket_root) -> None:  # noqa: ANN001
    folder = storage.join(bucket_root, "classic")
    written = {
        "train-00000-of-00002": classic_shard(storage.join(folder, "train-00000-of-00002"), [1, 2]),
        "train-00001-of-00002": classic_shard(storage.join(folder, "train-00001-of-00002"), [2]),
        "validation-00000-of-00001": classic_shard(
            storage.join(folder, "validation-00000-of-00001"), [1]
        ),
    }

    result = adopt(folder)

    assert result.label_offset == 1 and result.labels == ["daisy", "rose"]
    for name, data in written.items():
        info = result.splits[name.split("-")[0]]
        assert info.shard_bytes[name] == len(data)
        assert info.shard_crc32c[name] == crc32c_of(data)
    truncate(storage.join(folder, "train-00001-of-00002"))
    with pytest.raises(UserError, match="train-00001-of-00002 .* truncated"):
        manifest.check_shard_sizes(folder, manifest.load(folder), ["train", "validation"])


def test_the_crc32c_format_is_what_gcs_reports() -> None:
    data = os.urandom(1000)
    assert manifest.crc32c_base64(google_crc32c.Checksum(data).digest()) == crc32c_of(data)
