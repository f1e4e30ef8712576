"""Write shards: read each image, make its record, and publish each shard file atomically.

Runs inside worker processes. A shard is written as one or more pieces (so that several
workers can share a big shard) into a local staging folder, then published whole: renamed
into place (local output) or uploaded (gs://). Under its final name a shard is complete or
absent.

While the source files are in memory anyway, each stored one is hashed (duplicates are found
from the hashes, preprocess/duplicates.py); each published shard's CRC32C is taken from the
finished file just before it is published, so dataset.json can state what a reader must find.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import hashlib
import itertools
import os
from collections.abc import Iterator
from typing import Any

import google_crc32c

from common import manifest, records, storage
from common.cli import UserError
from common.images import BadImage, to_stored_jpeg
from preprocess.plan import ShardJob, Source

REMOTE_PREFETCH = 8  # gs:// objects in flight per worker
DIGEST_CHARS = 16  # hex digits of a source file's hash: 64 bits, no accidental collisions
NO_DIGEST = "-" * DIGEST_CHARS  # a source that was skipped, not stored
_CRC_CHUNK = 4 * 1024 * 1024


@dataclasses.dataclass
class SizeStats:
    """Height and width of what was stored, mergeable across shards and tasks."""

    count: int = 0
    height_min: int = 0
    height_max: int = 0
    height_sum: int = 0
    width_min: int = 0
    width_max: int = 0
    width_sum: int = 0

    def add(self, height: int, width: int) -> None:
        self.merge(SizeStats(1, height, height, height, width, width, width))

    def merge(self, other: SizeStats) -> None:
        if not other.count:
            return
        if not self.count:
            self.__dict__.update(other.__dict__)
            return
        self.count += other.count
        self.height_min = min(self.height_min, other.height_min)
        self.height_max = max(self.height_max, other.height_max)
        self.height_sum += other.height_sum
        self.width_min = min(self.width_min, other.width_min)
        self.width_max = max(self.width_max, other.width_max)
        self.width_sum += other.width_sum

    def to_manifest(self) -> dict[str, Any]:
        if not self.count:
            return {"count": 0}
        return {
            "count": self.count,
            "height": _summary(self.height_min, self.height_max, self.height_sum / self.count),
            "width": _summary(self.width_min, self.width_max, self.width_sum / self.count),
        }


def _summary(low: int, high: int, mean: float) -> dict[str, Any]:
    return {"min": low, "max": high, "mean": round(mean, 1)}


@dataclasses.dataclass
class ShardResult:
    name: str
    split: str
    per_class: dict[int, int]  # label -> records written
    skipped: list[dict[str, str]]
    stats: SizeStats
    bytes: int  # the shard file's size: its records, framed
    passed_through: int
    # DIGEST_CHARS hex digits per source of the shard, in the shard's order; NO_DIGEST for a
    # skipped one. One string, not a list: a million images cost 16 MB, not a million objects.
    digests: str = ""
    crc32c: str = ""  # of the whole published file, as manifest.crc32c_base64 writes it

    @property
    def count(self) -> int:
        return sum(self.per_class.values())

    def merge(self, other: ShardResult) -> None:
        """Add a later piece of the same shard."""
        for label, n in other.per_class.items():
            self.per_class[label] = self.per_class.get(label, 0) + n
        self.skipped.extend(other.skipped)
        self.stats.merge(other.stats)
        self.bytes += other.bytes
        self.passed_through += other.passed_through
        self.digests += other.digests

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["per_class"] = {str(k): v for k, v in self.per_class.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardResult:
        fields = dict(data)
        fields["per_class"] = {int(k): v for k, v in data["per_class"].items()}
        fields["stats"] = SizeStats(**data["stats"])
        return cls(**fields)


def write_piece(
    sources: tuple[Source, ...],
    path: str,
    shard: ShardJob,
    labels: list[str],
    max_side: int,
    progress: Any = None,
) -> ShardResult:
    """Write the records of some of a shard's images to a local file; `progress.add(1)` each."""
    result = ShardResult(shard.name, shard.split, {}, [], SizeStats(), 0, 0)
    digests = []
    try:
        with open(path, "xb") as stream:
            for source, content in _contents(sources):
                record = _record(source, content, labels, max_side, result)
                if record is not None:
                    stream.write(record)
                    result.bytes += len(record)
                    digests.append(_digest(content))
                else:
                    digests.append(NO_DIGEST)
                if progress is not None:
                    progress.add(1)
    except OSError as exc:  # disk full, folder gone: the run cannot go on
        raise UserError(f"cannot write {path}: {exc.strerror or exc}.") from exc
    result.digests = "".join(digests)
    return result


def _digest(content: bytes | BadImage) -> str:
    assert isinstance(content, bytes)
    return hashlib.blake2b(content, digest_size=DIGEST_CHARS // 2).hexdigest()


def publish(pieces: list[str], uri: str) -> str:
    """Make the shard at uri appear whole: its pieces' records, in order. Pieces are consumed.

    A TFRecord file is a plain sequence of records, so concatenating pieces makes the shard.
    Locally the pieces sit in a staging folder beside the output, so the rename is atomic.
    Returns the shard's CRC32C (manifest.crc32c_base64), read back from the finished file: it
    is in the page cache, so this costs little beside encoding its images.
    """
    try:
        whole = pieces[0] if len(pieces) == 1 else _concatenate(pieces)
        crc = _file_crc32c(whole)
        if storage.is_gcs(uri):
            storage.upload_file(whole, uri)
            os.unlink(whole)
        else:
            with open(whole, "rb+") as f:
                os.fsync(f.fileno())  # the data is on disk before the name is
            os.replace(whole, uri)
    except OSError as exc:
        raise UserError(f"cannot write {uri}: {exc.strerror or exc}.") from exc
    return crc


def _file_crc32c(path: str) -> str:
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as f:
        while chunk := f.read(_CRC_CHUNK):
            checksum.update(chunk)
    return manifest.crc32c_base64(checksum.digest())


def _concatenate(pieces: list[str]) -> str:
    whole = pieces[0] + ".whole"
    with open(whole, "xb") as out:
        for piece in pieces:
            with open(piece, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                copied = 0
                while copied < size:  # in the kernel, no copy through Python
                    copied += os.copy_file_range(f.fileno(), out.fileno(), size - copied)
            os.unlink(piece)
    return whole


def _record(
    source: Source, content: bytes | BadImage, labels: list[str], max_side: int, result: ShardResult
) -> bytes | None:
    """The framed record for one image, or None after noting why it was skipped."""
    try:
        if isinstance(content, BadImage):
            raise content
        stored = to_stored_jpeg(content, max_side)
    except BadImage as exc:
        result.skipped.append({"path": source.uri, "reason": str(exc)})
        return None
    example = records.image_example(
        jpeg=stored.jpeg,
        height=stored.height,
        width=stored.width,
        filename=source.relpath,
        label=source.label,
        text=labels[source.label],
    )
    result.per_class[source.label] = result.per_class.get(source.label, 0) + 1
    result.stats.add(stored.height, stored.width)
    result.passed_through += stored.passed_through
    return records.frame_record(example)


def _contents(sources: tuple[Source, ...]) -> Iterator[tuple[Source, bytes | BadImage]]:
    """Each source with its bytes (or why they cannot be read), in order.

    Objects in a bucket are fetched a few ahead on threads, so the CPU never waits on the
    network; local files are simply read.
    """
    if not any(storage.is_gcs(s.uri) for s in sources):
        for source in sources:
            yield source, _read(source.uri)
        return
    with cf.ThreadPoolExecutor(REMOTE_PREFETCH) as pool:
        ahead: collections.deque = collections.deque()
        pending = iter(sources)
        for source in itertools.islice(pending, REMOTE_PREFETCH):
            ahead.append((source, pool.submit(_read, source.uri)))
        while ahead:
            source, future = ahead.popleft()
            following = next(pending, None)
            if following is not None:
                ahead.append((following, pool.submit(_read, following.uri)))
            yield source, future.result()


def _read(uri: str) -> bytes | BadImage:
    """The file's bytes, or a BadImage saying why not (a broken network raises instead)."""
    try:
        return storage.read_bytes(uri)
    except FileNotFoundError:
        return BadImage("file disappeared or is a broken link")
    except PermissionError:
        return BadImage("no permission to read the file")
    except IsADirectoryError:
        return BadImage("is a folder")
    except OSError as exc:
        return BadImage(f"cannot read the file ({exc.strerror or exc})")
