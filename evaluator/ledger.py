"""What the evaluator has done for one run, kept in the run's eval dir.

One entry per checkpoint step: its scores, or the error that made the evaluator give up on it.
It is the evaluator's memory across restarts (a step in it is never evaluated again) and the
run's result history.

- The truth is one small object per step, `eval/results/step-<step>.json`, created only if
  absent. Two evaluators racing (a rolling update) can each create their own steps but never
  overwrite or drop another's entry: no shared file is ever rewritten from one process's
  memory. For a step both scored, the first record stands.
- `eval/results.jsonl` is a view for people and scripts, rewritten whole from the store after
  each new entry. Runs evaluated before the store existed are read from it; a torn last line
  (a writer killed mid-write on a filesystem without atomic renames) is ignored, never fatal.
"""

from __future__ import annotations

import json
import logging

from common import storage

log = logging.getLogger("evaluator")

RESULTS = "results.jsonl"
STORE = "results"


def _step_name(step: int) -> str:
    return f"step-{step:010d}.json"


class Ledger:
    def __init__(self, eval_dir: str) -> None:
        self.eval_dir = eval_dir
        self.uri = storage.join(eval_dir, RESULTS)
        self.store = storage.join(eval_dir, STORE)
        by_step = {e["step"]: e for e in _read_jsonl(self.uri)}
        by_step.update({e["step"]: e for e in self._read_store()})
        self.entries: list[dict] = sorted(by_step.values(), key=lambda e: e["step"])

    def _read_store(self, known: frozenset[int] = frozenset()) -> list[dict]:
        """Entries in the store, except steps already known (one listing, few reads)."""
        entries = []
        for uri in storage.list_files(self.store):
            name = storage.basename(uri)
            step = name[len("step-") : -len(".json")]
            if not (name.startswith("step-") and step.isdigit()) or int(step) in known:
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

    @property
    def steps(self) -> set[int]:
        return {entry["step"] for entry in self.entries}

    def scored(self) -> list[dict]:
        """Entries with scores (not the ones given up on), oldest step first."""
        return sorted((e for e in self.entries if "top1" in e), key=lambda e: e["step"])

    def best(self) -> dict | None:
        """The entry with the highest top-1; on a tie the earlier step."""
        scored = self.scored()
        return max(scored, key=lambda e: (e["top1"], -e["step"])) if scored else None

    def record(self, entry: dict) -> dict:
        """Keep an entry; if another evaluator already recorded this step, theirs stands.

        Returns the entry that is now on record for the step.
        """
        uri = storage.join(self.store, _step_name(entry["step"]))
        try:
            storage.write_json(uri, entry, if_absent=True)
        except FileExistsError:
            entry = storage.read_json(uri)
            log.warning("step %d was already recorded by another evaluator", entry["step"])
        self.entries = [e for e in self.entries if e["step"] != entry["step"]] + [entry]
        self.entries.sort(key=lambda e: e["step"])
        self._write_view()
        return entry

    def _write_view(self) -> None:
        merged = {e["step"]: e for e in self.entries}
        # What another evaluator recorded meanwhile belongs in the view too.
        merged.update({e["step"]: e for e in self._read_store(frozenset(merged))})
        body = "".join(json.dumps(merged[s], sort_keys=True) + "\n" for s in sorted(merged))
        storage.write_text(self.uri, body)

    def write_confusion(self, step: int, labels: list[str], confusion: list[list[int]]) -> str:
        uri = storage.join(self.eval_dir, f"confusion-{step}.json")
        storage.write_json(uri, {"step": step, "labels": labels, "matrix": confusion})
        return uri


def _read_jsonl(uri: str) -> list[dict]:
    """Entries of a results.jsonl; unreadable lines (a torn last one) are skipped."""
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
