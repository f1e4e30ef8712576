"""A run's results store: one create-only object per scored checkpoint, in the run's eval dir.

Two writers score checkpoints of a run: the evaluator (every checkpoint) and, in a sweep with
an early-stopping rule, the trainer itself (its rung checkpoints, common.early_stop). Each
result is `eval/results/step-<step>.json`, created only if absent, so that whoever records a
step first is on record and nobody ever overwrites or drops another's entry: a step is scored
once across both. `scored_by` (trainer, evaluator) and `precision` (the dtype policy of the
pass) say who scored it and how.

`eval/results.jsonl` is a view for people and scripts, rewritten whole from the store by the
evaluator. Runs evaluated before the store existed are read from it; a torn last line (a
writer killed mid-write on a filesystem without atomic renames) is ignored, never fatal.
`eval/confusion-<step>.json` holds each result's confusion matrix.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from common import storage

log = logging.getLogger(__name__)

VIEW = "results.jsonl"
STORE = "results"
SCORED_BY = ("evaluator", "trainer")


def step_uri(eval_dir: str, step: int) -> str:
    return storage.join(eval_dir, STORE, f"step-{step:010d}.json")


def read_store(eval_dir: str, known: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    """Entries in the store, except steps already known (one listing, few reads)."""
    entries = []
    for uri in storage.list_files(storage.join(eval_dir, STORE)):
        name = storage.basename(uri)
        step = name[len("step-") : -len(".json")]
        if not (name.startswith("step-") and name.endswith(".json") and step.isdigit()):
            continue
        if int(step) in known:
            continue
        try:
            entry = storage.read_json(uri)
        except FileNotFoundError:
            continue
        except ValueError as exc:
            log.warning("ignoring unreadable result %s (%s)", uri, exc)
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int):
            entries.append(entry)
    return entries


def read_all(eval_dir: str) -> list[dict[str, Any]]:
    """Every entry of a run, the store's over the view's, oldest step first."""
    by_step = {e["step"]: e for e in read_view(eval_dir)}
    by_step.update({e["step"]: e for e in read_store(eval_dir)})
    return [by_step[step] for step in sorted(by_step)]


def record(eval_dir: str, entry: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create the step's result unless one is there: (the entry on record, whether it is ours)."""
    uri = step_uri(eval_dir, entry["step"])
    try:
        storage.write_json(uri, entry, if_absent=True)
    except FileExistsError:
        return storage.read_json(uri), False
    return entry, True


def entry(
    step: int,
    checkpoint: str,
    result: dict[str, Any],
    confusion_uri: str,
    scored_by: str,
    precision: str,
    when: float,
) -> dict[str, Any]:
    """A result as both scorers record it (common.validation.score_split's result)."""
    return {
        "step": step,
        "checkpoint": checkpoint,
        "time": when,
        "scored_by": scored_by,
        "precision": precision,
        **result,
        "confusion": confusion_uri,
    }


def write_confusion(eval_dir: str, step: int, labels: list[str], matrix: list[list[int]]) -> str:
    uri = storage.join(eval_dir, f"confusion-{step}.json")
    storage.write_json(uri, {"step": step, "labels": labels, "matrix": matrix})
    return uri


def read_confusion(uri: str) -> list[list[int]] | None:
    """A result's confusion matrix (None when it cannot be read: it is for display only)."""
    try:
        matrix = storage.read_json(uri).get("matrix")
    except (OSError, ValueError, AttributeError):
        return None
    return matrix if isinstance(matrix, list) else None


def write_view(eval_dir: str, entries: list[dict[str, Any]]) -> None:
    """results.jsonl, one entry per line, by step."""
    body = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries)
    storage.write_text(storage.join(eval_dir, VIEW), body)


def read_view(eval_dir: str) -> list[dict[str, Any]]:
    """Entries of results.jsonl; unreadable lines (a torn last one) are skipped."""
    uri = storage.join(eval_dir, VIEW)
    try:
        text = storage.read_text(uri)
    except FileNotFoundError:
        return []
    except UnicodeDecodeError:
        text = storage.read_bytes(uri).decode("utf-8", errors="replace")
    entries = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            if number < len(lines):  # a torn last line is expected after a kill; say the rest
                log.warning("ignoring unreadable line %d of %s", number, uri)
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int):
            entries.append(entry)
    return entries
