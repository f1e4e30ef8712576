"""The preprocess run: list, plan, write shards, then publish the manifest last."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time

from common import manifest, records, storage
from common.cli import UserError
from preprocess import duplicates, output, parts, summary
from preprocess import labels as labels_mod
from preprocess.listing import Skip, list_split
from preprocess.plan import Plan, ShardJob, make_plan
from preprocess.pool import run_jobs
from preprocess.progress import Progress
from preprocess.shards import ShardResult, SizeStats

log = logging.getLogger("preprocess")


@dataclasses.dataclass(frozen=True)
class Options:
    train_dir: str
    val_dir: str
    out: str
    labels_file: str | None = None
    train_shards: int | None = None
    val_shards: int | None = None
    workers: int = 1
    max_side: int = 500
    strict: bool = False
    task_index: int = 0
    task_count: int = 1


@dataclasses.dataclass
class Outcome:
    """What a run did; `manifest` is None for a task that left publishing to another."""

    plan: Plan
    results: list[ShardResult]
    manifest: manifest.Manifest | None
    seconds: float


def build(opts: Options) -> Outcome:
    """Run one task of a preprocess run; raises UserError before writing on bad input."""
    started = time.monotonic()
    out = storage.normalize(opts.out)
    plan, listing_skips = _plan(opts, out)
    planned = output.planned_names(
        out, [job.name for job in plan.jobs], plan.fingerprint, opts.task_count
    )
    owned = output.claim(out, planned, plan.labels, opts.task_count)
    output.mark_incomplete(out)
    jobs = plan.jobs_for_task(opts.task_index, opts.task_count)
    mine = _write(opts, out, plan, jobs)
    everyone: list[ShardResult] | None = mine
    if opts.task_count > 1:
        parts.write_part(out, plan.fingerprint, opts.task_index, opts.task_count, mine)
        everyone = parts.read_all_parts(out, plan.fingerprint, opts.task_count)
    seconds = time.monotonic() - started
    if everyone is None:  # another task will publish
        summary.log_task(mine, seconds)
        _fail_if_strict(opts, [s for r in mine for s in r.skipped], publish=False)
        return Outcome(plan, mine, None, seconds)
    result = assemble_manifest(opts, out, plan, everyone, listing_skips)
    summary.log_run(result, mine, seconds)
    _publish(opts, out, result, listing_skips, owned, planned)
    return Outcome(plan, mine, result, seconds)


def _plan(opts: Options, out: str) -> tuple[Plan, list[Skip]]:
    """Check every input and decide every shard; nothing is written yet."""
    for flag, folder in (("--train-dir", opts.train_dir), ("--val-dir", opts.val_dir)):
        if (out + "/").startswith(storage.normalize(folder) + "/"):
            raise UserError(f"--out {out} is inside {flag} {folder}; write the dataset elsewhere.")
    storage.check_writable_location(out)
    listed = labels_mod.read_labels_file(opts.labels_file) if opts.labels_file else None
    train = list_split(opts.train_dir, "train dir")
    val = list_split(opts.val_dir, "val dir")
    labels, left_out = labels_mod.choose_labels(train, val, listed)
    for skip in left_out:
        log.warning("left out %s: %s", skip.path, skip.reason)
    plan = make_plan(
        labels,
        {records.TRAIN: train, records.VALIDATION: val},
        {records.TRAIN: opts.train_shards, records.VALIDATION: opts.val_shards},
        opts.max_side,
        opts.task_count,
    )
    return plan, [*train.skipped, *val.skipped, *left_out]


def _write(opts: Options, out: str, plan: Plan, jobs: list[ShardJob]) -> list[ShardResult]:
    images = sum(len(job.sources) for job in jobs)
    log.info(
        "writing %d of %d shards (%d images, %d class(es)) to %s with %d worker(s)",
        len(jobs),
        len(plan.jobs),
        images,
        len(plan.labels),
        out,
        opts.workers,
    )
    progress = Progress(images)
    try:
        return run_jobs(jobs, out, plan.labels, opts.max_side, opts.workers, progress)
    finally:
        progress.close()


def _publish(
    opts: Options,
    out: str,
    result: manifest.Manifest,
    listing_skips: list[Skip],
    owned: output.Names,
    planned: output.Names,
) -> None:
    """Mark the dataset complete, unless it must not be used; clear what earlier runs left."""
    _fail_if_empty_class(result)
    _fail_if_strict(opts, _image_skips(result, listing_skips), publish=True)
    output.remove_earlier_runs(out, owned, planned)
    manifest.save(out, result)
    log.info("wrote %s: the dataset is complete", manifest.manifest_uri(out))


def assemble_manifest(
    opts: Options, out: str, plan: Plan, results: list[ShardResult], listing_skips: list[Skip]
) -> manifest.Manifest:
    by_name = {r.name: r for r in results}
    splits = {}
    stats = SizeStats()
    for split in records.SPLITS:
        names = plan.shard_names(split)
        per_class = dict.fromkeys(plan.labels, 0)
        for name in names:
            for label, n in by_name[name].per_class.items():
                per_class[plan.labels[label]] += n
            stats.merge(by_name[name].stats)
        splits[split] = manifest.SplitInfo(
            sum(per_class.values()),
            per_class,
            names,
            shard_bytes={name: by_name[name].bytes for name in names},
            shard_crc32c={name: by_name[name].crc32c for name in names if by_name[name].crc32c},
        )
    skipped = [s.to_dict() for s in listing_skips]
    skipped += [s for name in sorted(by_name) for s in by_name[name].skipped]
    return manifest.Manifest(
        name=storage.basename(out),
        labels=plan.labels,
        splits=splits,
        label_offset=0,
        image_stats=stats.to_manifest(),
        skipped=sorted(skipped, key=lambda s: s["path"]),
        bytes_written=sum(r.bytes for r in results),
        source=_source(opts, plan),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        duplicates=duplicates.find(plan, by_name),
    )


def _source(opts: Options, plan: Plan) -> dict[str, object]:
    return {
        "tool": output.TOOL,
        "train_dir": storage.normalize(opts.train_dir),
        "val_dir": storage.normalize(opts.val_dir),
        "labels_file": opts.labels_file,
        "max_side": opts.max_side,
        "train_shards": len(plan.shard_names(records.TRAIN)),
        "val_shards": len(plan.shard_names(records.VALIDATION)),
        "task_count": opts.task_count,
        "fingerprint": plan.fingerprint,
    }


def _image_skips(result: manifest.Manifest, listing_skips: list[Skip]) -> list[dict[str, str]]:
    """Skipped files that could have been images (not class folders left out on purpose)."""
    on_purpose = {s.path for s in listing_skips if not s.is_image}
    return [s for s in result.skipped if s["path"] not in on_purpose]


def _fail_if_empty_class(result: manifest.Manifest) -> None:
    empty = [name for name, n in result.splits[records.TRAIN].per_class.items() if n == 0]
    if empty:
        raise UserError(
            f"train class {empty[0]!r} has no readable image (every file was skipped; see the "
            "list above), so no dataset.json was written."
        )


def _fail_if_strict(opts: Options, skipped: list[dict[str, str]], publish: bool) -> None:
    if opts.strict and skipped:
        consequence = "no dataset.json was written" if publish else "this task failed"
        raise UserError(f"--strict: {len(skipped)} file(s) were skipped, so {consequence}.")
