"""Write shards in parallel: one worker process per core, each writing whole shards.

The main process only hands out shard jobs and shows progress. Workers start from a fresh
forkserver, not a fork of this process, so they never share a network client's sockets.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os

from preprocess.plan import ShardJob
from preprocess.progress import Progress, SharedCounter
from preprocess.shards import ShardResult, write_shard

_counter: SharedCounter | None = None  # set in each worker by _init_worker


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects container CPU pinning
    except AttributeError:
        return os.cpu_count() or 1


def run_jobs(
    jobs: list[ShardJob],
    out_dir: str,
    labels: list[str],
    max_side: int,
    workers: int,
    progress: Progress,
) -> list[ShardResult]:
    """Write every job's shard; results in the order of `jobs`."""
    if workers <= 1 or len(jobs) <= 1:
        ticker = _InProcessTicker(progress)
        return [write_shard(job, out_dir, labels, max_side, ticker) for job in jobs]
    context = multiprocessing.get_context(_start_method())
    counter = SharedCounter(context)
    # Biggest shards first, so no worker is left with a big one at the end.
    order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i].sources))
    with cf.ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=context,
        initializer=_init_worker,
        initargs=(counter,),
    ) as executor:
        futures = {
            i: executor.submit(_write_in_worker, jobs[i], out_dir, labels, max_side) for i in order
        }
        try:
            _wait(list(futures.values()), counter, progress)
        except BaseException:
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        return [futures[i].result() for i in range(len(jobs))]


def _wait(futures: list[cf.Future], counter: SharedCounter, progress: Progress) -> None:
    pending = set(futures)
    while pending:
        done, pending = cf.wait(
            pending, timeout=progress.interval_s, return_when=cf.FIRST_EXCEPTION
        )
        progress.update(counter.value)
        for future in done:
            future.result()  # a worker's error ends the run now, not after every shard


def _start_method() -> str:
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def _init_worker(counter: SharedCounter) -> None:
    global _counter
    _counter = counter


def _write_in_worker(job: ShardJob, out_dir: str, labels: list[str], max_side: int) -> ShardResult:
    return write_shard(job, out_dir, labels, max_side, _counter)


class _InProcessTicker:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.done = 0

    def add(self, n: int) -> None:
        self.done += n
        self.progress.update(self.done)
