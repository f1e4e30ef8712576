"""Keep the output folder honest: incomplete while rewriting, never a mix of two runs.

The manifest is removed before the first shard is written and saved after the last, so a
reader either sees a complete dataset or none. Only names this tool makes are ever deleted:
shard files (`train-00000-of-00008`), staging folders of killed runs, and part files.
"""

from __future__ import annotations

import logging
import os
import re
import shutil

from common import manifest, storage

log = logging.getLogger("preprocess")

SHARD_NAME = re.compile(r"^(train|validation)-\d{5}-of-\d{5}$")
STAGING_PREFIX = ".preprocess-staging-"  # a run's private folder of shard pieces (local output)


def mark_incomplete(out_dir: str) -> None:
    """Remove an earlier run's manifest before changing any shard."""
    uri = manifest.manifest_uri(out_dir)
    if storage.exists(uri):
        storage.delete(uri)
        log.info("removed the old %s: the dataset is incomplete until this run ends", uri)


def remove_stale_shards(out_dir: str, keep: set[str]) -> list[str]:
    """Delete shards of earlier runs that this run does not list, and killed runs' staging."""
    removed = []
    for uri in storage.list_files(out_dir):
        name = storage.basename(uri)
        if SHARD_NAME.match(name) and name not in keep:
            storage.delete(uri)
            removed.append(name)
    if removed:
        log.info("removed %d stale shard file(s) of an earlier run", len(removed))
    if not storage.is_gcs(out_dir):
        for entry in os.scandir(out_dir):
            if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
    return removed
