"""The evaluator's results store: no entry lost when two writers race, torn lines ignored."""

from __future__ import annotations

import json
import math
import threading

from common import early_stop, layout, storage
from evaluator import leaderboard
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


def scored(eval_dir: str, *results: tuple[int, float, float]) -> Ledger:
    ledger = Ledger(eval_dir)
    for step, top1, loss in results:
        ledger.record({"step": step, "top1": top1, "loss": loss, "checkpoint": f"ckpt-{step}"})
    return ledger


def test_a_runs_best_is_the_one_early_stopping_names(tmp_path) -> None:  # noqa: ANN001
    """On a top-1 tie the lower validation loss wins, then the earlier step: the step the
    leaderboard shows (and exports) is the one a patience verdict calls the run's best."""
    ledger = scored(str(tmp_path / "eval"), (10, 0.75, 0.90), (20, 0.75, 0.87), (30, 0.75, 0.87),
                    (40, 0.70, 0.10), (50, 0.75, math.nan), (90, 0.60, 1.20))  # fmt: skip
    assert ledger.best()["step"] == 20
    rule = layout.EarlyStop("asha", grace=10, eta=3, patience=60)
    history = early_stop.scores_of(ledger.scored())
    (stop,) = early_stop.decide(rule, {"a": history, "b": [(90, 0.9)]}, {"a"}, 100)
    assert stop.figures["best_step"] == 20 and "at step 20 has not improved" in stop.reason


def test_the_leaderboard_ranks_a_top1_tie_by_loss_and_an_unknown_loss_last(tmp_path) -> None:  # noqa: ANN001
    runs = []
    for name, loss in (("nan", math.nan), ("high", 0.9), ("low", 0.4), ("none", None)):
        run = layout.RunDir(str(tmp_path / name))
        ledger = Ledger(run.eval_dir)
        ledger.record({"step": 5, "top1": 0.8, "loss": loss, "checkpoint": "ckpt-5"})
        runs.append((run, ledger, {}))
    rows = leaderboard.rank(runs)
    assert [r["run"] for r in rows] == ["low", "high", "nan", "none"]  # unknowns: by name
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
