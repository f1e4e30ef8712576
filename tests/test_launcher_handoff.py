"""A second local launcher on a sweep that one already runs (`refine --launch`, another
`sweep`): it records its runs in sweep.json and leaves the training to the running launcher.

No TensorFlow: the running launcher is stood in for by its lease, held by this test process,
since what is checked is only the second launcher's side (it writes sweep.json, starts no
process, says what it waits for, and stops waiting on Ctrl-C with 130). The first launcher's
side, queueing the added runs and training them, runs for real in test_launcher_local.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from common import layout, storage
from common.lease import Lease
from launcher.local import LAUNCHER_LEASE
from tests.trainer_testdata import REPO, write_dataset


def test_refine_launch_hands_its_runs_to_the_running_launcher(tmp_path) -> None:  # noqa: ANN001
    data = str(tmp_path / "data")
    write_dataset(data, train_per_class=2, val_per_class=1, train_shards=1, size=80)
    sweep_dir = layout.SweepDir(str(tmp_path / "sweep"))
    sweep_dir.save(layout.Sweep("sweep", data, [layout.Candidate("lr-0.01", 0.01)]))
    sweep_dir.run("lr-0.01").save_hparams({"lr": 0.01, "steps": 4})
    storage.write_json(
        sweep_dir.leaderboard_uri,
        {"runs": [{"run": "lr-0.01", "rank": 1, "best_top1": 0.5, "best_step": 2}]},
    )
    with Lease(storage.join(sweep_dir.uri, LAUNCHER_LEASE), role="launcher") as running:
        running.acquire()
        refine = subprocess.Popen(
            [sys.executable, "-m", "launcher", "refine", "--sweep", sweep_dir.uri, "--launch"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while len(sweep_dir.load().candidates) < 2:
            assert refine.poll() is None, refine.communicate()
            assert time.monotonic() < deadline, "refine recorded nothing"
            time.sleep(0.2)
        time.sleep(2 * 2.0)  # a few of its polls of the lease: it must still be waiting
        assert refine.poll() is None
        refine.send_signal(signal.SIGINT)
        out, err = refine.communicate(timeout=30)
    assert refine.returncode == 130, err
    proposed = next(line for line in out.splitlines() if line.startswith("next: --lrs "))
    added = [layout.run_name_for_lr(float(x)) for x in proposed.split()[-1].split(",")]
    assert sweep_dir.load().run_names() == ["lr-0.01", *added]
    assert "another launcher runs this sweep (host " in err
    assert "it trains every run sweep.json names, these included" in err
    assert "started (pid" not in err  # no trainer, no evaluator of its own
    assert "stopped waiting; the same command resumes the sweep" in err
