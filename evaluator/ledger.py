"""What has been scored of one run, as the evaluator keeps it between rounds.

The truth is the run's results store (common.results): one create-only object per step,
written by this evaluator, another one racing it (a rolling update), or the run's trainer at
its rung checkpoints. A step in it is never scored again. The ledger caches the entries,
refresh() picks up what others recorded since, and each change rewrites the results.jsonl
view from the store.
"""

from __future__ import annotations

import logging

from common import results
from common.early_stop import Score

log = logging.getLogger("evaluator")


class Ledger:
    def __init__(self, eval_dir: str) -> None:
        self.eval_dir = eval_dir
        self.entries: list[dict] = results.read_all(eval_dir)

    @property
    def steps(self) -> set[int]:
        return {entry["step"] for entry in self.entries}

    def scored(self) -> list[dict]:
        """Entries with scores (not the ones given up on), oldest step first."""
        return sorted((e for e in self.entries if "top1" in e), key=lambda e: e["step"])

    def best(self) -> dict | None:
        """The best entry in Score.key's order (higher top-1, then lower loss, as early
        stopping judges it); on an exact tie the earlier step. It is the run's row on the
        leaderboard and, for the best run, the checkpoint exported."""
        scored = self.scored()  # oldest first: max keeps the first of equals
        return max(scored, key=lambda e: Score.of(e).key) if scored else None

    def refresh(self) -> list[dict]:
        """Entries others recorded since this ledger last looked (one listing); the view is
        rewritten when there are any."""
        new = results.read_store(self.eval_dir, frozenset(self.steps))
        if new:
            self._merge(new)
            self._write_view()
        return sorted(new, key=lambda e: e["step"])

    def record(self, entry: dict) -> dict:
        """Keep an entry; if another scorer already recorded this step, theirs stands.

        Returns the entry that is now on record for the step.
        """
        entry, ours = results.record(self.eval_dir, entry)
        if not ours:
            log.warning("step %d was already recorded by the %s", entry["step"],
                        entry.get("scored_by") or "another evaluator")  # fmt: skip
        self._merge([entry])
        self._write_view()
        return entry

    def _merge(self, entries: list[dict]) -> None:
        steps = {e["step"] for e in entries}
        self.entries = sorted([e for e in self.entries if e["step"] not in steps] + entries,
                              key=lambda e: e["step"])  # fmt: skip

    def _write_view(self) -> None:
        # What another scorer recorded meanwhile belongs in the view too.
        self._merge(results.read_store(self.eval_dir, frozenset(self.steps)))
        results.write_view(self.eval_dir, self.entries)

    def write_confusion(self, step: int, labels: list[str], confusion: list[list[int]]) -> str:
        return results.write_confusion(self.eval_dir, step, labels, confusion)
