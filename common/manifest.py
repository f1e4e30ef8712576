"""`dataset.json`: the manifest written last into a dataset directory.

Its presence means the dataset is complete. Trainer and evaluator size everything from it
(classes, examples per epoch, shard list), so nobody types a count by hand.

Fields added later have defaults, so manifests written before them still load:
- `SplitInfo.shard_bytes`: each shard's size in bytes (check_shard_sizes compares them).
- `SplitInfo.shard_crc32c`: each shard file's CRC32C, written as GCS reports an object's
  `crc32c`: base64 of the checksum's 4 bytes, big-endian (crc32c_base64). A gs:// reader can
  compare it with the object's metadata without downloading the shard.
- `Manifest.duplicates`: exact duplicate images (same file bytes) that preprocess found and
  kept: `within_class` (extra copies of an image in its own class and split),
  `across_classes` (images found under two or more classes: conflicting labels),
  `train_validation` (validation images also in train: leakage), and `examples`, a few
  `{"kind": ..., "files": [first, second]}` pairs.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import dataclasses
from typing import Any

from common import storage
from common.cli import UserError
from common.records import SPLITS

MANIFEST_NAME = "dataset.json"
LABELS_NAME = "labels.txt"
FORMAT = "inception-finetune-dataset/1"


@dataclasses.dataclass
class SplitInfo:
    count: int
    per_class: dict[str, int]
    shards: list[str]  # file names relative to the dataset directory
    shard_bytes: dict[str, int] = dataclasses.field(default_factory=dict)  # name -> size
    shard_crc32c: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> base64


@dataclasses.dataclass
class Manifest:
    name: str
    labels: list[str]
    splits: dict[str, SplitInfo]
    # Stored label = class id + label_offset. Ours are 0-based (offset 0); the classic tool's
    # are 1-based with 0 for "background" (offset 1).
    label_offset: int = 0
    image_stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
    bytes_written: int = 0
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    created: str = ""
    format: str = FORMAT
    duplicates: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def count(self, split: str) -> int:
        return self.splits[split].count if split in self.splits else 0

    def shard_uris(self, dataset_uri: str, split: str) -> list[str]:
        if split not in self.splits:
            return []
        return [storage.join(dataset_uri, name) for name in self.splits[split].shards]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "dataset.json") -> Manifest:
        try:
            splits = {name: _known(SplitInfo, info) for name, info in data["splits"].items()}
            rest = {k: v for k, v in _known_fields(cls, data).items() if k != "splits"}
            manifest = cls(splits=splits, **rest)
        except (KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"{where} is not a valid dataset manifest ({exc}).") from exc
        unknown = set(manifest.splits) - set(SPLITS)
        if unknown:
            raise UserError(f"{where} names unknown splits: {', '.join(sorted(unknown))}.")
        if not manifest.labels:
            raise UserError(f"{where} lists no labels.")
        return manifest


def crc32c_base64(digest: bytes) -> str:
    """A CRC32C's 4 big-endian bytes (google_crc32c's digest()) as GCS writes them: base64."""
    return base64.b64encode(digest).decode("ascii")


def check_shard_sizes(dataset_uri: str, manifest: Manifest, splits: list[str]) -> None:
    """Fail in one sentence on the first shard (in manifest order) cut short, replaced or gone.

    A copy that stopped halfway otherwise shows up hours into training as a damaged record.
    Shards the manifest gives no size (older manifests) pass unchecked. Costs one size
    look-up per shard: a stat locally, a metadata request on gs:// (several at once).
    """
    expected = [
        (name, info.shard_bytes[name])
        for split in splits
        if (info := manifest.splits.get(split)) is not None
        for name in info.shards
        if name in info.shard_bytes
    ]
    if not expected:
        return
    sizes = _sizes([storage.join(dataset_uri, name) for name, _ in expected])
    for (name, want), got in zip(expected, sizes, strict=True):
        if got is None:
            raise UserError(
                f"the shard {name} of {dataset_uri} is missing although {MANIFEST_NAME} lists "
                "it; rerun preprocess or copy it again."
            )
        if got != want:
            raise UserError(
                f"the shard {name} of {dataset_uri} is {got} bytes but {MANIFEST_NAME} says "
                f"{want}: it is truncated or was replaced; rerun preprocess or copy it again."
            )


def _sizes(uris: list[str]) -> list[int | None]:
    """Each file's size, None for a missing one; gs:// look-ups run a few at a time."""
    if not uris or not storage.is_gcs(uris[0]):
        return [_size_or_none(uri) for uri in uris]
    with cf.ThreadPoolExecutor(16) as pool:
        return list(pool.map(_size_or_none, uris))


def _size_or_none(uri: str) -> int | None:
    try:
        return storage.size(uri)
    except FileNotFoundError:
        return None


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries a dataclass has fields for: a newer writer's extra fields are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _known(cls: type, data: dict[str, Any]) -> Any:
    return cls(**_known_fields(cls, data))


def manifest_uri(dataset_uri: str) -> str:
    return storage.join(dataset_uri, MANIFEST_NAME)


def load(dataset_uri: str) -> Manifest:
    """Read a complete dataset's manifest, or fail with one sentence saying why."""
    uri = manifest_uri(dataset_uri)
    try:
        data = storage.read_json(uri)
    except FileNotFoundError as exc:
        raise UserError(
            f"no {MANIFEST_NAME} in {dataset_uri}: it is not a dataset, or its preprocess run "
            "did not finish (run `python -m preprocess`, or `python -m preprocess adopt` for "
            "classic shards)."
        ) from exc
    except ValueError as exc:
        raise UserError(f"{uri} is not valid JSON ({exc}).") from exc
    return Manifest.from_dict(data, where=uri)


def save(dataset_uri: str, manifest: Manifest) -> None:
    """Write labels.txt, then the manifest last: its presence marks the dataset complete."""
    storage.write_text(
        storage.join(dataset_uri, LABELS_NAME), "".join(f"{label}\n" for label in manifest.labels)
    )
    storage.write_json(manifest_uri(dataset_uri), manifest.to_dict())
