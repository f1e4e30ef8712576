"""The closing report on the console: what went where, what was skipped and why, how fast."""

from __future__ import annotations

import logging
from typing import Any

from common import manifest
from preprocess.shards import ShardResult

log = logging.getLogger("preprocess")

MAX_CLASSES_LISTED = 40
MAX_SKIPS_LISTED = 50


def log_run(result: manifest.Manifest, mine: list[ShardResult], seconds: float) -> None:
    for split, info in result.splits.items():
        log.info("%s: %d images in %d shard(s)", split, info.count, len(info.shards))
        _log_classes(info.per_class)
    _log_skips(result.skipped)
    _log_duplicates(result.duplicates)
    _log_rate(mine, seconds)


def log_task(mine: list[ShardResult], seconds: float) -> None:
    """For a task whose siblings are still running: only its own share."""
    _log_skips([s for r in mine for s in r.skipped])
    _log_rate(mine, seconds)


def _log_rate(mine: list[ShardResult], seconds: float) -> None:
    images = sum(r.count + len(r.skipped) for r in mine)
    written = sum(r.bytes for r in mine)
    kept = sum(r.passed_through for r in mine)
    stored = sum(r.count for r in mine)
    rate = images / seconds if seconds > 0 else 0.0
    log.info(
        "wrote %d records (%.1f MB) in %d shard(s) in %.1f s: %.0f images/s; "
        "%d JPEGs stored as they were, %d converted",
        stored,
        written / 1e6,
        len(mine),
        seconds,
        rate,
        kept,
        stored - kept,
    )


def _log_classes(per_class: dict[str, int]) -> None:
    if len(per_class) <= MAX_CLASSES_LISTED:
        for name, n in per_class.items():
            log.info("  %-24s %7d", name, n)
        return
    fewest = min(per_class, key=per_class.__getitem__)
    most = max(per_class, key=per_class.__getitem__)
    log.info(
        "  %d classes, from %d images (%s) to %d (%s); all counts are in dataset.json",
        len(per_class),
        per_class[fewest],
        fewest,
        per_class[most],
        most,
    )


def _log_skips(skipped: list[dict[str, str]]) -> None:
    if not skipped:
        log.info("skipped: none")
        return
    log.warning("skipped %d file(s):", len(skipped))
    for entry in skipped[:MAX_SKIPS_LISTED]:
        log.warning("  %s: %s", entry["path"], entry["reason"])
    if len(skipped) > MAX_SKIPS_LISTED:
        more = len(skipped) - MAX_SKIPS_LISTED
        log.warning("  ... and %d more, all listed in dataset.json", more)


# What each kind of duplicate does to training, said once after its count.
_DUPLICATE_NEWS = {
    "within_class": (
        "extra cop(ies) of an image in the same class: those images weigh more in training "
        "(mostly harmless)"
    ),
    "across_classes": (
        "image(s) under two or more classes: conflicting labels confuse training; keep each in "
        "its right class only"
    ),
    "train_validation": (
        "validation image(s) also in train: leakage inflates validation accuracy; remove them "
        "from one of the two"
    ),
}


def _log_duplicates(found: dict[str, Any]) -> None:
    """Counts of exact duplicates (kept in the dataset), what they mean, and a few examples."""
    if not any(found.get(kind) for kind in _DUPLICATE_NEWS):
        log.info("duplicates: none (no two stored images have the same file bytes)")
        return
    log.warning("duplicates (same file bytes; all kept, listed in dataset.json):")
    for kind, news in _DUPLICATE_NEWS.items():
        if found.get(kind):
            log.warning("  %d %s", found[kind], news)
    for example in found.get("examples", []):
        log.warning("  e.g. %s: %s", example["kind"], " = ".join(example["files"]))
