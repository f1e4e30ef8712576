"""Keep the output folder honest: incomplete while rewriting, never a mix of two runs.

The manifest is removed before the first shard is written and saved after the last, so a
reader either sees a complete dataset or none. Only names this tool makes are ever deleted:
shard files (`train-00000-of-00008`), their hidden temporaries, and part files.
"""

from __future__ import annotations

import logging
import re

from common import manifest, storage

log = logging.getLogger("preprocess")

SHARD_NAME = re.compile(r"^(train|validation)-\d{5}-of-\d{5}$")
_SHARD_TEMP_NAME = re.compile(r"^\.(train|validation)-\d{5}-of-\d{5}\..+\.tmp$")


def mark_incomplete(out_dir: str) -> None:
    """Remove an earlier run's manifest before changing any shard."""
    uri = manifest.manifest_uri(out_dir)
    if storage.exists(uri):
        storage.delete(uri)
        log.info("removed the old %s: the dataset is incomplete until this run ends", uri)


def remove_stale_shards(out_dir: str, keep: set[str]) -> list[str]:
    """Delete shards of earlier runs that this run does not list, and orphaned temporaries."""
    removed = []
    for uri in storage.list_files(out_dir):
        name = storage.basename(uri)
        stale_shard = SHARD_NAME.match(name) and name not in keep
        if stale_shard or _SHARD_TEMP_NAME.match(name):
            storage.delete(uri)
            removed.append(name)
    if removed:
        log.info("removed %d stale shard file(s) of an earlier run", len(removed))
    return removed
