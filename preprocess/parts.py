"""Split a run across K independent tasks (processes, or pods of an Indexed Job).

Each task writes its shards, then a small part file named by the run's fingerprint. A task
that then finds all K parts of its run writes the manifest; if two do so at once they write
the same content, so the double write is harmless. Parts stay after the manifest is written:
a task retried later must still find its siblings' parts to restore the manifest it removed.
The next run removes them (preprocess/output.py), as it does every file a run of ours wrote.
"""

from __future__ import annotations

import logging
import os

from common import storage
from preprocess.shards import ShardResult

log = logging.getLogger("preprocess")

PARTS_DIR = "_parts"


def task_index_default() -> int:
    """The task index a Kubernetes Indexed Job gives each pod, else 0."""
    raw = os.environ.get("JOB_COMPLETION_INDEX", "0")
    return int(raw) if raw.strip().isdigit() else -1


def part_name(fingerprint: str, index: int, count: int) -> str:
    """A task's part file, relative to the output folder."""
    return f"{PARTS_DIR}/{fingerprint}/part-{index:05d}-of-{count:05d}.json"


def part_uri(out_dir: str, fingerprint: str, index: int, count: int) -> str:
    return storage.join(out_dir, *part_name(fingerprint, index, count).split("/"))


def write_part(
    out_dir: str, fingerprint: str, index: int, count: int, results: list[ShardResult]
) -> None:
    storage.write_json(
        part_uri(out_dir, fingerprint, index, count),
        {
            "fingerprint": fingerprint,
            "task_index": index,
            "task_count": count,
            "shards": [r.to_json() for r in results],
        },
    )


def read_all_parts(out_dir: str, fingerprint: str, count: int) -> list[ShardResult] | None:
    """Every task's shard results, or None while some task of this run has not finished."""
    folder = storage.join(out_dir, PARTS_DIR, fingerprint)
    present = {storage.basename(u) for u in storage.list_files(folder)}
    expected = [storage.basename(part_uri(out_dir, fingerprint, i, count)) for i in range(count)]
    missing = [name for name in expected if name not in present]
    if missing:
        log.info(
            "%d of %d task parts are in; the last task to finish writes dataset.json",
            count - len(missing),
            count,
        )
        return None
    results = []
    for name in expected:
        data = storage.read_json(storage.join(folder, name))
        results.extend(ShardResult.from_json(shard) for shard in data["shards"])
    return results
