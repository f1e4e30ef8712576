"""The evaluator on a cluster: stopped by SIGTERM cleanly, and best/ kept to a few exports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import layout


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_sigterm_stops_the_watching_evaluator_cleanly(tmp_path: Path) -> None:
    """A Deployment rollout's SIGTERM: exit 0 within moments, the lease released for the next
    pod (not left to expire), no traceback; before, SIGTERM killed it wherever it was."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "evaluator", "--sweep-dir", str(sweep), "--interval", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lease = sweep / layout.EVALUATOR_LEASE
        _wait_for(lease, proc, 60)
        time.sleep(0.5)  # into its 30-second sleep between rounds
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "SIGTERM received" in err
    assert json.loads(lease.read_text())["released"] is True


def _export(best: Path, version: int | str) -> str:
    """A complete export as is_complete_export sees one."""
    folder = best / str(version)
    (folder / "variables").mkdir(parents=True)
    for name in ("saved_model.pb", "variables/variables.index", "labels.txt"):
        (folder / name).write_text("x")
    return str(folder)


def test_best_exports_beyond_the_newest_k_are_pruned_never_the_current(tmp_path: Path) -> None:
    from evaluator.watch import Options, Session

    sweep = tmp_path / "sweep"
    best = sweep / layout.BEST
    versions = [_export(best, 1000 + i) for i in range(6)]
    _export(best, "mine")  # not named as ours: left alone
    session = Session(Options(target=str(sweep), sweep=True, keep_best=2))
    session.start()
    try:
        current = versions[1]  # an old best that is still the best (a newer one was not)
        removed = session.prune_best(current)
    finally:
        session.close()
    left = sorted(os.listdir(best))
    assert left == ["1001", "1004", "1005", "mine"], left
    assert sorted(removed) == sorted([versions[0], versions[2], versions[3]])


def test_keep_best_flag() -> None:
    from evaluator.cli import eval_parser

    assert eval_parser().parse_args(["--sweep-dir", "x"]).keep_best == 3
    assert eval_parser().parse_args(["--sweep-dir", "x", "--keep-best", "5"]).keep_best == 5
