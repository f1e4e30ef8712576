"""What the evaluator has done for one run, kept in the run's eval dir.

`results.jsonl` holds one line per checkpoint step: its scores, or the error that made the
evaluator give up on it. It is the evaluator's memory across restarts (a step in it is never
evaluated again) and the run's result history. Buckets cannot append, so each new line
rewrites the file whole; it stays small (the confusion matrices live in their own files).
"""

from __future__ import annotations

import json

from common import storage

RESULTS = "results.jsonl"


class Ledger:
    def __init__(self, eval_dir: str) -> None:
        self.eval_dir = eval_dir
        self.uri = storage.join(eval_dir, RESULTS)
        self.entries: list[dict] = []
        try:
            text = storage.read_text(self.uri)
        except FileNotFoundError:
            text = ""
        for line in text.splitlines():
            if line.strip():
                self.entries.append(json.loads(line))

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

    def record(self, entry: dict) -> None:
        self.entries.append(entry)
        body = "".join(json.dumps(e, sort_keys=True) + "\n" for e in self.entries)
        storage.write_text(self.uri, body)

    def write_confusion(self, step: int, labels: list[str], confusion: list[list[int]]) -> str:
        uri = storage.join(self.eval_dir, f"confusion-{step}.json")
        storage.write_json(uri, {"step": step, "labels": labels, "matrix": confusion})
        return uri
