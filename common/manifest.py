"""`dataset.json`: the manifest written last into a dataset directory.

Its presence means the dataset is complete. Trainer and evaluator size everything from it
(classes, examples per epoch, shard list), so nobody types a count by hand.
"""

from __future__ import annotations

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
            splits = {name: SplitInfo(**info) for name, info in data["splits"].items()}
            fields = {f.name for f in dataclasses.fields(cls)}
            rest = {k: v for k, v in data.items() if k in fields and k != "splits"}
            manifest = cls(splits=splits, **rest)
        except (KeyError, TypeError) as exc:
            raise UserError(f"{where} is not a valid dataset manifest ({exc}).") from exc
        unknown = set(manifest.splits) - set(SPLITS)
        if unknown:
            raise UserError(f"{where} names unknown splits: {', '.join(sorted(unknown))}.")
        if not manifest.labels:
            raise UserError(f"{where} lists no labels.")
        return manifest


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
