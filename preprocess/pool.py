"""Write shards in parallel: worker processes write pieces of shards and publish them.

A shard is cut into pieces of about a hundred images (fewer for big files), so every core
has work even when the dataset makes only one or two shards; when a shard's last piece is
in, a worker concatenates and publishes it. The main process only hands out work and shows
progress. Workers start from a fresh forkserver, not a fork of this process, so they never
share a network client's sockets.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import math
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator

from common import storage
from preprocess.output import STAGING_DIR
from preprocess.plan import ShardJob, Source
from preprocess.progress import Progress, SharedCounter
from preprocess.shards import ShardResult, publish, write_piece

PIECE_IMAGES = 100
PIECE_BYTES = 32 * 1024 * 1024  # of input: about ten 12-megapixel photos

_counter: SharedCounter | None = None  # set in each worker by _init_worker


def default_workers() -> int:
    """The cores this process may use: CPU pinning and a container's CPU limit count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(cores, math.ceil(limit))) if limit else cores


def _cgroup_cpu_limit() -> float | None:
    """A Kubernetes CPU limit, as cores (cgroup v2, then v1); None when unlimited or unknown."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota_us = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period_us = int(f.read())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def run_jobs(
    jobs: list[ShardJob],
    out_dir: str,
    labels: list[str],
    max_side: int,
    workers: int,
    progress: Progress,
) -> list[ShardResult]:
    """Write and publish every job's shard; results in the order of `jobs`."""
    if not jobs:  # a task with no share of a small run
        return []
    with _staging(out_dir) as staging:
        if workers <= 1:
            ticker = _InProcessTicker(progress)
            return [_write_whole(job, out_dir, staging, labels, max_side, ticker) for job in jobs]
        return _Scheduler(jobs, out_dir, staging, labels, max_side, workers, progress).run()


def pieces_of(job: ShardJob) -> list[tuple[Source, ...]]:
    """Contiguous runs of the shard's images: about PIECE_IMAGES, or PIECE_BYTES of input."""
    sources = job.sources
    size = sum(max(s.size, 0) for s in sources)
    count = max(1, math.ceil(len(sources) / PIECE_IMAGES), math.ceil(size / PIECE_BYTES))
    count = min(count, max(1, len(sources)))
    n = len(sources)
    return [sources[i * n // count : (i + 1) * n // count] for i in range(count)]


def _piece_path(staging: str, job: ShardJob, piece: int) -> str:
    return os.path.join(staging, f"{job.name}.{piece:05d}")


def _write_whole(
    job: ShardJob,
    out_dir: str,
    staging: str,
    labels: list[str],
    max_side: int,
    ticker: _InProcessTicker,
) -> ShardResult:
    path = _piece_path(staging, job, 0)
    result = write_piece(job.sources, path, job, labels, max_side, ticker)
    result.crc32c = publish([path], storage.join(out_dir, job.name))
    return result


class _Scheduler:
    """Keeps every worker busy with pieces; publishes each shard as soon as it is complete."""

    def __init__(
        self,
        jobs: list[ShardJob],
        out_dir: str,
        staging: str,
        labels: list[str],
        max_side: int,
        workers: int,
        progress: Progress,
    ) -> None:
        self.jobs = jobs
        self.out_dir = out_dir
        self.staging = staging
        self.labels = labels
        self.max_side = max_side
        self.workers = workers
        self.progress = progress
        self.queue = collections.deque(
            (j, p, sources)
            for j, job in enumerate(jobs)
            for p, sources in enumerate(pieces_of(job))
        )
        self.pieces: dict[int, list[ShardResult | None]] = collections.defaultdict(list)
        for j, _piece, _sources in self.queue:
            self.pieces[j].append(None)
        self.running: dict[cf.Future, tuple[str, int, int]] = {}
        self.crc32c: dict[int, str] = {}  # job -> its published shard's CRC32C

    def run(self) -> list[ShardResult]:
        context = multiprocessing.get_context(_start_method())
        if context.get_start_method() == "forkserver":
            # Workers fork from a server that has already imported the image code.
            context.set_forkserver_preload(["preprocess.shards"])
        counter = SharedCounter(context)
        with cf.ProcessPoolExecutor(
            max_workers=min(self.workers, len(self.queue)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(counter,),
        ) as executor:
            try:
                while self.queue or self.running:
                    self._submit_pieces(executor)
                    done, _ = cf.wait(
                        self.running,
                        timeout=self.progress.interval_s,
                        return_when=cf.FIRST_COMPLETED,
                    )
                    self.progress.update(counter.value)
                    for future in done:
                        self._finished(executor, future)
            except BaseException:
                executor.shutdown(wait=True, cancel_futures=True)
                raise
        return [self._merged(j) for j in range(len(self.jobs))]

    def _submit_pieces(self, executor: cf.Executor) -> None:
        # A short queue: shards complete (and pieces leave the disk) in order, not all at the end.
        while self.queue and len(self.running) < 2 * self.workers:
            j, p, sources = self.queue.popleft()
            job = self.jobs[j]
            future = executor.submit(
                _write_piece_in_worker,
                sources,
                _piece_path(self.staging, job, p),
                job,
                self.labels,
                self.max_side,
            )
            self.running[future] = ("piece", j, p)

    def _finished(self, executor: cf.Executor, future: cf.Future) -> None:
        kind, j, p = self.running.pop(future)
        result = future.result()  # a worker's error ends the run here
        if kind != "piece":
            self.crc32c[j] = result
            return
        self.pieces[j][p] = result
        if all(r is not None for r in self.pieces[j]):
            job = self.jobs[j]
            paths = [_piece_path(self.staging, job, i) for i in range(len(self.pieces[j]))]
            uri = storage.join(self.out_dir, job.name)
            self.running[executor.submit(publish, paths, uri)] = ("publish", j, 0)

    def _merged(self, j: int) -> ShardResult:
        first, *rest = self.pieces[j]
        assert first is not None
        for piece in rest:
            assert piece is not None
            first.merge(piece)
        first.crc32c = self.crc32c[j]
        return first


@contextlib.contextmanager
def _staging(out_dir: str) -> Iterator[str]:
    """A private folder for pieces: inside the output when local (so renames are atomic).

    Locally it lies in the recorded STAGING_DIR, so what a killed run leaves there is ours to
    remove (preprocess/output.py).
    """
    if storage.is_gcs(out_dir):
        folder = tempfile.mkdtemp(prefix="preprocess-staging-")
    else:
        parent = os.path.join(out_dir, STAGING_DIR)
        os.makedirs(parent, exist_ok=True)
        folder = tempfile.mkdtemp(dir=parent)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _start_method() -> str:
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def _init_worker(counter: SharedCounter) -> None:
    global _counter
    _counter = counter


def _write_piece_in_worker(
    sources: tuple[Source, ...], path: str, job: ShardJob, labels: list[str], max_side: int
) -> ShardResult:
    return write_piece(sources, path, job, labels, max_side, _counter)


class _InProcessTicker:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.done = 0

    def add(self, n: int) -> None:
        self.done += n
        self.progress.update(self.done)
