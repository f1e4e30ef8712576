"""The evaluator's results store: no entry lost when two writers race, torn lines ignored."""

from __future__ import annotations

import json
import threading

from common import storage
from evaluator.ledger import Ledger


def entry(step: int, top1: float = 0.5) -> dict:
    return {"step": step, "top1": top1, "loss": 1.0, "checkpoint": f"ckpt-{step}"}


def test_two_writers_with_stale_memories_lose_no_entry(bucket_root: str) -> None:
    eval_dir = storage.join(bucket_root, "runs", "lr-0.1", "eval")
    first, second = Ledger(eval_dir), Ledger(eval_dir)  # both start from an empty store
    first.record(entry(10))
    second.record(entry(20))  # its memory lacks step 10: the old store rewrote it away
    first.record(entry(30))
    again = Ledger(eval_dir)
    assert sorted(again.steps) == [10, 20, 30]
    view = [
        json.loads(line) for line in storage.read_text(f"{eval_dir}/results.jsonl").splitlines()
    ]
    assert [e["step"] for e in view] == [10, 20, 30]


def test_racing_threads_record_every_step_once(bucket_root: str) -> None:
    eval_dir = storage.join(bucket_root, "eval")
    ledgers = [Ledger(eval_dir) for _ in range(4)]

    def work(i: int) -> None:
        for step in range(i, 24, 4):
            ledgers[i].record(entry(step))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(Ledger(eval_dir).steps) == list(range(24))


def test_the_first_record_of_a_step_stands(bucket_root: str) -> None:
    eval_dir = storage.join(bucket_root, "eval")
    first, second = Ledger(eval_dir), Ledger(eval_dir)
    first.record(entry(10, top1=0.7))
    kept = second.record(entry(10, top1=0.1))  # a second evaluator scored it too
    assert kept["top1"] == 0.7
    assert [e["top1"] for e in Ledger(eval_dir).entries] == [0.7]


def test_a_torn_last_line_is_ignored_and_older_results_are_read(tmp_path) -> None:  # noqa: ANN001
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    good = json.dumps(entry(10)) + "\n" + json.dumps(entry(20)) + "\n"
    (eval_dir / "results.jsonl").write_text(good + '{"step": 30, "top1": 0.')  # killed mid-line
    ledger = Ledger(str(eval_dir))
    assert sorted(ledger.steps) == [10, 20]
    ledger.record(entry(30))
    assert sorted(Ledger(str(eval_dir)).steps) == [10, 20, 30]
