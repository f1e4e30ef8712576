"""One worker against two on the same global batch: the overhead of several workers.

    python benchmarks/bench_workers.py                 # 2 CPU cores: a few minutes
    python benchmarks/bench_workers.py --steps 300     # longer, steadier figures

Runs the real trainer (`python -m trainer`) on ImageNet-like data (bench_trainer's) at 75 px,
head and backbone trained, once as one process and once as two worker processes on
127.0.0.1 (MultiWorkerMirroredStrategy, as `--workers 2` on a cluster), and prints each one's
steps/s after the first logging interval (tracing, warm-up). On one machine the two workers
share its cores, so no speed-up is expected: the figure shows what the collectives cost. On
GPU nodes the same flags spread a run over several of them.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_trainer import make_dataset  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_LINE = re.compile(r"step (\d+), loss = [\d.]+ \(([\d.]+) examples/sec")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trainer(data: str, run_dir: str, flags: list[str], log: str) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "trainer", "--data", data, "--run-dir", run_dir, *flags],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip


def steps_per_second(log: str, batch: int) -> float:
    """Mean steps/s over the logging intervals after the first one."""
    with open(log) as f:
        rates = [float(rate) / batch for _, rate in STEP_LINE.findall(f.read())[1:]]
    if not rates:
        raise SystemExit(f"no step lines after the first in {log}")
    return sum(rates) / len(rates)


def run(data: str, root: str, workers: int, flags: list[str], batch: int) -> tuple[float, float]:
    run_dir = os.path.join(root, f"run-{workers}")
    logs = [os.path.join(root, f"workers-{workers}.{i}.log") for i in range(workers)]
    extra = [[]]
    if workers > 1:
        hosts = ",".join(f"127.0.0.1:{_free_port()}" for _ in range(workers))
        extra = [["--workers", str(workers), "--worker-hosts", hosts, "--worker-index", str(i)]
                 for i in range(workers)]  # fmt: skip
    start = time.perf_counter()
    procs = [_trainer(data, run_dir, [*flags, *e], log) for e, log in zip(extra, logs, strict=True)]
    codes = [p.wait() for p in procs]
    seconds = time.perf_counter() - start
    if any(codes):
        raise SystemExit(f"{workers} worker(s) exited {codes}; see {logs}")
    return steps_per_second(logs[0], batch), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=16, help="the global batch")
    parser.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    root = args.out or tempfile.mkdtemp(prefix="bench-workers-")
    data = make_dataset(root, 256, shards=4)
    flags = ["--image-size", "75", "--weights", "none", "--fine-tune", "all",
             "--batch-size", str(args.batch_size), "--steps", str(args.steps),
             "--log-every", "20", "--checkpoint-every", str(args.steps)]  # fmt: skip
    print(f"global batch {args.batch_size}, {args.steps} steps, 75 px, whole network; {root}")
    for workers in (1, 2):
        rate, seconds = run(data, root, workers, flags, args.batch_size)
        print(f"{workers} worker(s): {rate:.2f} steps/s after warm-up "
              f"({rate * args.batch_size:.1f} images/s); {seconds:.0f} s in all")  # fmt: skip


if __name__ == "__main__":
    main()
