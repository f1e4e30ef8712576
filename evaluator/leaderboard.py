"""The sweep's ranking of its runs, and where its best model lives."""

from __future__ import annotations

import datetime

from common import storage
from common.early_stop import Score
from common.layout import RunDir
from evaluator.ledger import Ledger

# Hyperparameters worth a column; the rest stay in each run's hparams.json.
_SHOWN_HPARAMS = ("lr", "batch_size", "optimizer", "fine_tune", "image_size", "weights", "steps")


def rank(
    runs: list[tuple[RunDir, Ledger, dict]], stopped: dict[str, dict] | None = None
) -> list[dict]:
    """Rows for runs with at least one scored checkpoint, best top-1 first.

    stopped: run -> why it was stopped early (its stop.json, or complete.json's `stopped`);
    such a row says so, with the rule, the step and the reason.
    """
    stopped = stopped or {}
    rows = []
    for run, ledger, hparams in runs:
        best = ledger.best()
        if best is None:
            continue
        last = ledger.scored()[-1]
        rows.append(
            {
                "run": run.name,
                "run_dir": run.uri,
                "best_top1": best["top1"],
                "best_top5": best.get("top5"),
                "best_loss": best["loss"],
                "best_step": best["step"],
                "best_checkpoint": best["checkpoint"],
                "last_step": last["step"],
                "evaluated": len(ledger.scored()),
                "complete": run.is_complete(),
                "stopped": _stop_summary(stopped[run.name]) if run.name in stopped else None,
                "hparams": {k: hparams[k] for k in _SHOWN_HPARAMS if k in hparams},
            }
        )
    rows.sort(key=_order)
    for position, row in enumerate(rows, start=1):
        row["rank"] = position
    return rows


def _order(row: dict) -> tuple[float, float, str]:
    """Best first in Score.key's order (the one early stopping and each run's best use), then
    by name."""
    top1, negative_loss = Score(row["best_step"], row["best_top1"], row["best_loss"]).key
    return (-top1, -negative_loss, row["run"])


def read(uri: str) -> dict:
    """The last leaderboard written; empty when there is none or it cannot be read."""
    try:
        board = storage.read_json(uri)
    except (FileNotFoundError, ValueError):
        return {}
    return board if isinstance(board, dict) else {}


def _stop_summary(why: dict) -> dict:
    return {"rule": why.get("rule"), "step": why.get("step"), "reason": why.get("reason")}


def write(
    uri: str,
    rows: list[dict],
    best_export: dict | None,
    broken: dict[str, str] | None = None,
    stopped: dict[str, dict] | None = None,
    lag: dict[str, dict] | None = None,
) -> dict:
    """leaderboard.json: ranked runs, the best export, runs that could not be read (why), runs
    stopped early (rule, step, why) and the evaluator's lag per run (checkpoints waiting, age
    of the oldest in seconds)."""
    board = {
        "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": rows,
        "best": best_export,
        "broken": [{"run": name, "reason": why} for name, why in sorted((broken or {}).items())],
        "stopped": [
            {"run": name, **_stop_summary(why)} for name, why in sorted((stopped or {}).items())
        ],
        "lag": dict(sorted((lag or {}).items())),
    }
    storage.write_json(uri, board)
    return board
