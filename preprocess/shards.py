"""Write one whole shard: read each image, make its record, and publish the file atomically.

Runs inside a worker process. A shard appears under its final name complete or not at all:
written to a hidden temporary sibling and renamed (local), or written to a local temporary
file and uploaded whole (gs://).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO

from common import records, storage
from common.cli import UserError
from preprocess.images import BadImage, to_stored_jpeg
from preprocess.plan import ShardJob, Source

_UMASK = os.umask(0o022)
os.umask(_UMASK)


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
    bytes: int
    passed_through: int

    @property
    def count(self) -> int:
        return sum(self.per_class.values())

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


def write_shard(
    job: ShardJob, out_dir: str, labels: list[str], max_side: int, progress: Any = None
) -> ShardResult:
    """Write job's records to out_dir/job.name; `progress.add(1)` after each image, if given."""
    result = ShardResult(job.name, job.split, {}, [], SizeStats(), 0, 0)
    uri = storage.join(out_dir, job.name)
    try:
        with _published(uri) as stream:
            for source in job.sources:
                record = _record(source, labels, max_side, result)
                if record is not None:
                    stream.write(record)
                    result.bytes += len(record)
                if progress is not None:
                    progress.add(1)
    except OSError as exc:  # disk full, folder gone: the run cannot go on
        raise UserError(f"cannot write {uri}: {exc.strerror or exc}.") from exc
    return result


def _record(source: Source, labels: list[str], max_side: int, result: ShardResult) -> bytes | None:
    """The framed record for one image, or None after noting why it was skipped."""
    try:
        stored = to_stored_jpeg(_read(source.uri), max_side)
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


def _read(uri: str) -> bytes:
    try:
        return storage.read_bytes(uri)
    except FileNotFoundError as exc:
        raise BadImage("file disappeared or is a broken link") from exc
    except PermissionError as exc:
        raise BadImage("no permission to read the file") from exc
    except IsADirectoryError as exc:
        raise BadImage("is a folder") from exc
    except OSError as exc:
        raise BadImage(f"cannot read the file ({exc.strerror or exc})") from exc


@contextlib.contextmanager
def _published(uri: str) -> Iterator[BinaryIO]:
    """A file to write; on success it appears whole at uri, on failure it leaves no trace."""
    name = storage.basename(uri)
    local_dir = None if storage.is_gcs(uri) else os.path.dirname(uri)
    if local_dir is not None:
        os.makedirs(local_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=local_dir)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; readers may be other users
        with os.fdopen(fd, "wb") as stream:
            yield stream
            if local_dir is not None:
                stream.flush()
                os.fsync(stream.fileno())
        if local_dir is not None:
            os.replace(tmp, uri)
        else:
            storage.upload_file(tmp, uri)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
