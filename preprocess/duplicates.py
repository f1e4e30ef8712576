"""Find exact duplicate images (the same file bytes) among what a run stored, and only report them.

Copies within a class weigh an image more, which is mostly harmless; one image under two
classes teaches the model two answers for one picture; a validation image that is also in
train makes the validation accuracy look better than the model is. The user decides what to do,
so nothing is dropped. Hashes come from the workers (ShardResult.digests), which read every file
anyway, in the plan's order, so K tasks find exactly what one task finds.
"""

from __future__ import annotations

import collections
from typing import Any

from common import records
from preprocess.plan import Plan, Source
from preprocess.shards import DIGEST_CHARS, NO_DIGEST, ShardResult

WITHIN_CLASS = "within_class"
ACROSS_CLASSES = "across_classes"
TRAIN_VALIDATION = "train_validation"
KINDS = (WITHIN_CLASS, ACROSS_CLASSES, TRAIN_VALIDATION)
EXAMPLES_PER_KIND = 3

Entry = tuple[str, Source]  # (split, source)


def find(plan: Plan, results: dict[str, ShardResult]) -> dict[str, Any]:
    """The counts and a few example pairs for Manifest.duplicates."""
    counts = dict.fromkeys(KINDS, 0)
    examples: dict[str, list[list[str]]] = {kind: [] for kind in KINDS}
    for group in _groups(plan, results):
        for kind, n, pair in _classify(group):
            counts[kind] += n
            if len(examples[kind]) < EXAMPLES_PER_KIND:
                examples[kind].append(pair)
    found: dict[str, Any] = dict(counts)
    found["examples"] = [{"kind": kind, "files": pair} for kind in KINDS for pair in examples[kind]]
    return found


def _groups(plan: Plan, results: dict[str, ShardResult]) -> list[list[Entry]]:
    """Sources with the same hash, two or more to a group, in a fixed order.

    Only the first source of each hash is remembered until a second one turns up, so memory
    stays near one small integer per image.
    """
    first: dict[int, Entry] = {}
    repeated: dict[int, list[Entry]] = collections.defaultdict(list)
    for job in plan.jobs:
        digests = results[job.name].digests
        if len(digests) != DIGEST_CHARS * len(job.sources):
            continue  # written by a version that did not hash: nothing known
        for i, source in enumerate(job.sources):
            digest = digests[i * DIGEST_CHARS : (i + 1) * DIGEST_CHARS]
            if digest == NO_DIGEST:
                continue
            key = int(digest, 16)
            if key in first:
                repeated[key].append((job.split, source))
            else:
                first[key] = (job.split, source)
    groups = [sorted([first[key], *more], key=_order) for key, more in repeated.items()]
    return sorted(groups, key=lambda group: _order(group[0]))


def _order(entry: Entry) -> tuple[int, str]:
    split, source = entry
    return (records.SPLITS.index(split), source.uri)


def _classify(group: list[Entry]) -> list[tuple[str, int, list[str]]]:
    """(kind, how many it adds to that kind's count, an example pair) for one group."""
    found = []
    by_place: dict[tuple[str, int], list[Entry]] = collections.defaultdict(list)
    for entry in group:
        by_place[(entry[0], entry[1].label)].append(entry)
    for same in by_place.values():
        if len(same) > 1:
            found.append((WITHIN_CLASS, len(same) - 1, _pair(same[0], same[1])))
    first_of_label: dict[int, Entry] = {}
    for entry in group:
        first_of_label.setdefault(entry[1].label, entry)
    if len(first_of_label) > 1:
        one, other = list(first_of_label.values())[:2]
        found.append((ACROSS_CLASSES, 1, _pair(one, other)))
    train = [e for e in group if e[0] == records.TRAIN]
    validation = [e for e in group if e[0] == records.VALIDATION]
    if train and validation:
        found.append((TRAIN_VALIDATION, len(validation), _pair(train[0], validation[0])))
    return found


def _pair(one: Entry, other: Entry) -> list[str]:
    return [one[1].uri, other[1].uri]
