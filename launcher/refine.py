"""`refine`: the next, finer sweep around the best learning rate, as people do it by hand.

After a coarse sweep (1.0, 0.1, 0.01, 0.001) the best lr b is bracketed by 5b, 2b, b/2 and
b/5 (best 0.01 -> 0.05, 0.02, 0.005, 0.002); rates already run are left out. With --launch the
new candidates are added to the same sweep.json and run into the same sweep dir, so the
evaluator and the leaderboard compare old and new runs together.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from common import layout
from common.cli import UserError
from common.layout import run_name_for_lr
from launcher.spec import SweepSpec

FACTORS = (5.0, 2.0, 1.0, 0.5, 0.2)


def propose(best_lr: float, done: set[str]) -> list[float]:
    """Learning rates around best_lr, largest first, less those whose run name is in done.

    Only finite rates above 0: 5 * 1e308 overflows to inf and 0.2 * 5e-324 rounds to 0, and
    neither is a learning rate a trainer accepts.
    """
    out = []
    for factor in FACTORS:
        lr = float(f"{best_lr * factor:.6g}")  # 0.05, not 0.05000000000000001
        if _usable(lr) and run_name_for_lr(lr) not in done and lr not in out:
            out.append(lr)
    return out


def _usable(lr: Any) -> bool:
    """A learning rate a trainer accepts: a finite number above 0 (not true/false)."""
    return (
        isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0
    )


def best_run(sweep_dir: layout.SweepDir, sweep: layout.Sweep) -> tuple[str, float, dict]:
    """The leaderboard's first run: (run, lr, its row); one sentence if none is scored."""
    board = sweep_dir.leaderboard() or {}
    rows = [r for r in board.get("runs") or [] if isinstance(r, dict) and r.get("run")]
    if not rows:
        raise UserError(
            f"no run of {sweep_dir.uri} has been scored yet; wait for the evaluator "
            f"(python -m launcher status --sweep {sweep_dir.uri})."
        )
    row = min(rows, key=lambda r: r.get("rank", 1 << 30))
    lrs = {c.run: c.lr for c in sweep.candidates}
    lr = lrs.get(row["run"], (row.get("hparams") or {}).get("lr"))
    if lr is None:
        raise UserError(f"cannot tell the learning rate of the best run {row['run']}.")
    if not _usable(lr):
        raise UserError(
            f"the best run {row['run']} has learning rate {lr!r}, not a finite number above 0, "
            "so there is nothing to refine around; check its hparams.json and the leaderboard."
        )
    return row["run"], float(lr), row


def main(args: argparse.Namespace) -> int:
    sweep_dir = layout.SweepDir.at(args.sweep)
    sweep = sweep_dir.load()
    if sweep is None:
        raise UserError(f"no sweep description in {sweep_dir.uri}: launch a sweep there first.")
    run, lr, row = best_run(sweep_dir, sweep)
    done = set(sweep.run_names()) | {r.name for r in sweep_dir.runs()}
    lrs = propose(lr, done)
    top1, step = row.get("best_top1"), row.get("best_step")
    print(f"best so far: {run} (top-1 {top1:.4f} at step {step})" if top1 is not None else run)
    if not lrs:
        print("every learning rate around it has been run already: nothing to refine")
        return 0
    print("next: --lrs " + ",".join(f"{x:g}" for x in lrs))
    if not args.launch:
        print(f"launch with: python -m launcher refine --sweep {sweep_dir.uri} --launch")
        return 0
    from launcher import launch

    values = launch.load_values(args, args.backend)
    spec = SweepSpec(
        sweep.name,
        sweep.data,
        sweep_dir.uri,
        tuple(lrs),
        tuple(sweep.trainer_args),
        sweep.early_stop,
        launch.workers_from(values),
        getattr(args, "eval_interval", None),
    )
    launch.validate(spec, values, args.backend)
    return launch.launch(spec, values, args)
