"""The run's plan: which image goes into which shard, decided the same way by every task.

Everything here is a pure function of the listing and the options, so K independent tasks
(processes or pods) that list the same folders agree on every shard without talking to each
other, and a rerun over the same input writes the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random

from common import records
from preprocess.listing import SplitListing

IMAGES_PER_SHARD = 1000
BYTES_PER_SHARD = 150 * 1024 * 1024
# A stored JPEG of quality 90 rarely exceeds ~0.5 bytes per pixel; it bounds the estimate
# when the input files are bigger than what is kept of them.
_BYTES_PER_STORED_PIXEL = 0.5
_UNKNOWN_SIZE_GUESS = 1024 * 1024  # an unlisted file size, when nothing bounds the output
SHUFFLE_SEED = 20150314  # fixed: the order must not change between runs or tasks


@dataclasses.dataclass(frozen=True)
class Source:
    uri: str
    relpath: str  # stored as image/filename
    size: int
    label: int


@dataclasses.dataclass(frozen=True)
class ShardJob:
    split: str
    index: int
    count: int
    sources: tuple[Source, ...]

    @property
    def name(self) -> str:
        return records.shard_name(self.split, self.index, self.count)


@dataclasses.dataclass(frozen=True)
class Plan:
    labels: list[str]
    jobs: list[ShardJob]  # train shards, then validation shards
    fingerprint: str

    def shard_names(self, split: str) -> list[str]:
        return [job.name for job in self.jobs if job.split == split]

    def jobs_for_task(self, task_index: int, task_count: int) -> list[ShardJob]:
        return [job for i, job in enumerate(self.jobs) if i % task_count == task_index]

    def total_images(self) -> int:
        return sum(len(job.sources) for job in self.jobs)


def make_plan(
    labels: list[str],
    splits: dict[str, SplitListing],
    shard_counts: dict[str, int | None],
    max_side: int,
    task_count: int,
) -> Plan:
    """Shuffle each split deterministically and cut it into shards (counts: None = automatic)."""
    jobs: list[ShardJob] = []
    for split in records.SPLITS:
        sources = shuffled_sources(labels, splits[split])
        count = shard_counts.get(split) or auto_shard_count(sources, max_side)
        jobs.extend(_cut(split, sources, count))
    return Plan(labels, jobs, _fingerprint(labels, jobs, max_side, task_count))


def shuffled_sources(labels: list[str], listing: SplitListing) -> list[Source]:
    sources = [
        Source(found.uri, found.relpath, found.size, label)
        for label, name in enumerate(labels)
        for found in listing.classes.get(name, [])
    ]
    sources.sort(key=lambda s: (s.label, s.relpath))
    random.Random(SHUFFLE_SEED).shuffle(sources)
    return sources


def auto_shard_count(sources: list[Source], max_side: int) -> int:
    """About 1,000 images a shard, fewer when they would make a shard over 150 MB."""
    estimated = sum(_estimated_bytes(s.size, max_side) for s in sources)
    by_count = math.ceil(len(sources) / IMAGES_PER_SHARD)
    return max(1, by_count, math.ceil(estimated / BYTES_PER_SHARD))


def _estimated_bytes(size: int, max_side: int) -> float:
    bound = max_side * max_side * _BYTES_PER_STORED_PIXEL if max_side else math.inf
    if size < 0:
        return bound if max_side else _UNKNOWN_SIZE_GUESS
    return min(size, bound)


def _cut(split: str, sources: list[Source], count: int) -> list[ShardJob]:
    n = len(sources)
    return [
        ShardJob(split, i, count, tuple(sources[i * n // count : (i + 1) * n // count]))
        for i in range(count)
    ]


def _fingerprint(labels: list[str], jobs: list[ShardJob], max_side: int, task_count: int) -> str:
    """Identifies the run: the same input and options give the same value in every task."""
    digest = hashlib.sha256(json.dumps([labels, max_side, task_count]).encode("utf-8"))
    for job in jobs:
        entries = [job.name, [[s.uri, s.size, s.label] for s in job.sources]]
        digest.update(json.dumps(entries).encode("utf-8"))
    return digest.hexdigest()[:16]
