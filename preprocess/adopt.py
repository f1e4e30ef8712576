"""`python -m preprocess adopt`: give existing classic shards a dataset.json.

Shards made by the classic `build_image_data.py` have the same record keys but 1-based labels
(0 was a "background" class nobody used). Scanning them yields the counts, the class names
(from image/class/text or a labels file) and the label offset, so trainer and evaluator read
them correctly without anyone typing a number.
"""

from __future__ import annotations

import collections
import datetime
import io
import logging
from typing import BinaryIO

import google_crc32c

from common import manifest, records, storage
from common.args import ArgumentParser
from common.cli import UserError, setup_logging
from preprocess.examples import parse_example
from preprocess.labels import read_labels_file
from preprocess.listing import check_class_name
from preprocess.output import SHARD_NAME
from preprocess.shards import SizeStats

log = logging.getLogger("preprocess")


class _Tally:
    """What the records of one dataset say, gathered shard by shard."""

    def __init__(self) -> None:
        self.counts: dict[str, collections.Counter[int]] = {}
        self.texts: dict[int, set[str]] = collections.defaultdict(set)
        self.missing_text = 0
        self.stats = SizeStats()

    def add(self, split: str, features: dict, where: str) -> None:
        label = _single(features, records.KEY_LABEL, where)
        if not isinstance(label, int) or label < 0:
            raise UserError(f"{where} has a record with label {label!r}; expected 0 or more.")
        self.counts.setdefault(split, collections.Counter())[label] += 1
        text = features.get(records.KEY_TEXT)
        if text:
            self.texts[label].add(text[0].decode("utf-8", "replace"))
        else:
            self.missing_text += 1
        height = features.get(records.KEY_HEIGHT)
        width = features.get(records.KEY_WIDTH)
        if height and width:
            self.stats.add(int(height[0]), int(width[0]))

    def labels_seen(self) -> set[int]:
        return {label for counter in self.counts.values() for label in counter}


def adopt(dataset_dir: str, labels_file: str | None = None) -> manifest.Manifest:
    """Scan the classic shards in dataset_dir and write its dataset.json (and labels.txt)."""
    dataset_dir = storage.normalize(dataset_dir)
    if not storage.is_dir(dataset_dir):
        raise UserError(f"{dataset_dir} does not exist or is not a folder.")
    listed = read_labels_file(labels_file) if labels_file else None
    shards = find_shards(dataset_dir)
    tally = _Tally()
    sizes: dict[str, int] = {}
    crcs: dict[str, str] = {}
    for split, names in shards.items():
        for name in names:
            uri = storage.join(dataset_dir, name)
            sizes[name] = storage.size(uri)
            crcs[name] = _scan(uri, split, tally)
    offset = _label_offset(tally)
    names = _class_names(tally, offset, listed)
    result = manifest.Manifest(
        name=storage.basename(dataset_dir),
        labels=names,
        splits={
            split: _split_info(tally.counts.get(split, collections.Counter()), offset, names, shard)
            for split, shard in shards.items()
        },
        label_offset=offset,
        image_stats=tally.stats.to_manifest(),
        skipped=[],
        bytes_written=sum(sizes.values()),
        source={
            "tool": "python -m preprocess adopt",
            "adopted": "existing shards, scanned",
            "labels_from": labels_file or "image/class/text of the records",
        },
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    _check_labels_txt(dataset_dir, names)
    for info in result.splits.values():  # what a reader can check the shards against
        info.shard_bytes = {name: sizes[name] for name in info.shards}
        info.shard_crc32c = {name: crcs[name] for name in info.shards}
    manifest.save(dataset_dir, result)
    for split, info in result.splits.items():
        log.info("%s: %d records in %d shard(s)", split, info.count, len(info.shards))
    log.info(
        "%d classes, label offset %d; wrote %s",
        len(names),
        offset,
        manifest.manifest_uri(dataset_dir),
    )
    return result


def find_shards(dataset_dir: str) -> dict[str, list[str]]:
    """Shard names per split; every shard of an `-of-N` set must be there, and only one set."""
    by_split: dict[str, list[str]] = collections.defaultdict(list)
    for uri in storage.list_files(dataset_dir):
        name = storage.basename(uri)
        if SHARD_NAME.match(name):
            by_split[name.split("-", 1)[0]].append(name)
    if records.TRAIN not in by_split:
        raise UserError(
            f"{dataset_dir} holds no train shards (files named like train-00000-of-00002)."
        )
    for split, names in by_split.items():
        totals = {name.rsplit("-", 1)[1] for name in names}
        if len(totals) > 1:
            raise UserError(
                f"{dataset_dir} mixes {split} shards of different runs "
                f"(-of-{', -of-'.join(sorted(totals))}); remove the stale ones first."
            )
        total = int(totals.pop())
        expected = [records.shard_name(split, i, total) for i in range(total)]
        missing = sorted(set(expected) - set(names))
        if missing:
            raise UserError(f"{dataset_dir} is missing {len(missing)} shard(s), e.g. {missing[0]}.")
        by_split[split] = expected
    return {split: by_split[split] for split in records.SPLITS if split in by_split}


def _scan(uri: str, split: str, tally: _Tally) -> str:
    """Tally the shard's records; returns its CRC32C, taken on the way (one read per shard)."""
    with _open(uri) as raw:
        stream = _Checksummed(raw)
        try:
            for i, data in enumerate(records.iter_records(stream)):
                tally.add(split, parse_example(data), f"{uri} (record {i})")
        except ValueError as exc:
            raise UserError(f"{uri} is damaged or not a TFRecord file ({exc}).") from exc
        return manifest.crc32c_base64(stream.checksum.digest())


class _Checksummed:
    """A reader that takes the CRC32C of everything read through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.checksum = google_crc32c.Checksum()

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.checksum.update(data)
        return data


def _open(uri: str) -> BinaryIO:
    if storage.is_gcs(uri):
        return io.BytesIO(storage.read_bytes(uri))
    return open(uri, "rb")  # noqa: SIM115 - closed by the caller's with


def _single(features: dict, key: str, where: str) -> object:
    values = features.get(key)
    if not values:
        raise UserError(f"{where} has no {key}; these are not image classification records.")
    return values[0]


def _label_offset(tally: _Tally) -> int:
    """0 when some record uses label 0; else 1, the classic tool's (0 was background)."""
    return 0 if 0 in tally.labels_seen() else 1


def _class_names(tally: _Tally, offset: int, listed: list[str] | None) -> list[str]:
    top = max(tally.labels_seen())
    if listed is not None:
        if top - offset >= len(listed):
            raise UserError(
                f"records use label {top}, but the labels file lists only {len(listed)} classes "
                f"(label offset {offset})."
            )
        return listed
    if tally.missing_text:
        raise UserError(
            f"{tally.missing_text} record(s) carry no image/class/text, so class names are "
            "unknown; give them with --labels-file."
        )
    names = []
    for label in range(offset, top + 1):
        texts = tally.texts.get(label)
        if not texts:
            raise UserError(
                f"no record has label {label}, so its class name is unknown; give the names "
                "with --labels-file."
            )
        if len(texts) > 1:
            raise UserError(f"label {label} is named both {' and '.join(sorted(texts)[:2])!r}.")
        names.append(check_class_name(texts.pop(), f"the class name of label {label}"))
    if len(set(names)) != len(names):
        raise UserError("two labels carry the same class name; give the names with --labels-file.")
    return names


def _split_info(
    counts: collections.Counter[int], offset: int, names: list[str], shards: list[str]
) -> manifest.SplitInfo:
    per_class = {name: counts.get(i + offset, 0) for i, name in enumerate(names)}
    return manifest.SplitInfo(sum(per_class.values()), per_class, shards)


def _check_labels_txt(dataset_dir: str, names: list[str]) -> None:
    """Never overwrite a labels.txt the user keeps there with different content."""
    uri = storage.join(dataset_dir, manifest.LABELS_NAME)
    if not storage.exists(uri):
        return
    existing = [line.strip() for line in storage.read_text(uri).splitlines() if line.strip()]
    if existing != names:
        raise UserError(
            f"{uri} exists and differs from the class names found; pass it as --labels-file "
            "if it is right, or move it away."
        )


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(
        prog="python -m preprocess adopt",
        description="Write dataset.json (and labels.txt) for a folder of TFRecord shards made "
        "by the classic build_image_data.py (labels 1..N), by scanning the shards.",
    )
    p.add_argument(
        "--dir", required=True, metavar="URI", help="folder of train-*/validation-* shards"
    )
    p.add_argument(
        "--labels-file",
        metavar="FILE",
        help="class names, one per line, in label order (default: image/class/text)",
    )
    args = p.parse_args(argv)
    setup_logging()
    adopt(args.dir, args.labels_file)
    return 0
