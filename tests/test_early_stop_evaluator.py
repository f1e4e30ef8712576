"""The evaluator's side of early stopping and of keeping up, in process: real run and sweep
directories, real ledgers, leases, stop.json files and metrics; only the scoring of a
checkpoint is made up (a table of top-1 by run and step), so that the rule's verdicts are
known in advance and no model is built.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from common import layout, storage
from tests.trainer_testdata import write_dataset

pytest.importorskip("tensorflow")

from evaluator import watch  # noqa: E402
from evaluator.metrics import EvalMetrics  # noqa: E402

STEPS = 100


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:  # noqa: ANN001
    path = str(tmp_path_factory.mktemp("early-stop-eval") / "data")
    write_dataset(path, train_per_class=2, val_per_class=2, train_shards=1, size=32)
    return path


class Sweep:
    """A sweep directory whose runs get checkpoints (empty files: scoring is made up)."""

    def __init__(self, root: str, data: str, rule: layout.EarlyStop, runs: tuple[str, ...]):
        self.dir = layout.SweepDir(root)
        self.data = data
        candidates = [layout.Candidate(name, 0.1) for name in runs]
        self.dir.save(layout.Sweep("s", data, candidates, early_stop=rule))
        for name in runs:
            self.dir.run(name).save_hparams({"data": data, "image_size": 75, "steps": STEPS})

    def checkpoint(self, run: str, *steps: int) -> None:
        for step in steps:
            uri = storage.join(self.dir.run(run).checkpoints_dir, f"ckpt-{step}.index")
            storage.write_bytes(uri, b"")

    def complete(self, run: str) -> None:
        self.dir.run(run).save_complete({"final_step": STEPS})


def session_for(sweep: Sweep, top1: dict[tuple[str, int], float]) -> watch.Session:
    """A started Session whose scores come from `top1`; it records what it scored, in order."""
    session = watch.Session(
        watch.Options(target=sweep.dir.uri, sweep=True, interval=0.05, metrics=EvalMetrics())
    )
    session.scored_order = []

    def score(setup, checkpoint):  # noqa: ANN001, ANN202
        run = os.path.basename(os.path.dirname(os.path.dirname(checkpoint.prefix)))
        session.scored_order.append((run, checkpoint.step))
        value = top1[(run, checkpoint.step)]
        labels = setup.manifest.labels
        result = {"examples": setup.manifest.count("validation"), "top1": value, "top5": None,
                  "loss": 1.0 - value, "per_class": {}, "seconds": 0.01,
                  "examples_per_sec": 1.0}  # fmt: skip
        return result, [[0] * len(labels) for _ in labels]

    session.evaluator.score = score
    session.export_best = lambda row: {"run": row["run"], "step": row["best_step"],
                                       "top1": row["best_top1"], "export": "made-up"}  # fmt: skip
    session.start()
    return session


def scored_steps(sweep: Sweep, run: str) -> list[int]:
    from evaluator.ledger import Ledger

    return [e["step"] for e in Ledger(sweep.dir.run(run).eval_dir).scored()]


def test_a_stopped_run_is_never_scored_or_stopped_twice(tmp_path, data: str) -> None:  # noqa: ANN001
    sweep = Sweep(str(tmp_path / "sweep"), data, layout.EarlyStop("asha", 10, 3), ("a", "b", "c"))
    top1 = {("a", 10): 0.9, ("b", 10): 0.5, ("c", 10): 0.1,
            ("a", 20): 0.9, ("b", 20): 0.95, ("c", 20): 0.99}  # fmt: skip
    for run in ("a", "b", "c"):
        sweep.checkpoint(run, 10)
    session = session_for(sweep, top1)
    try:
        runs = session.runs()
        assert session.round(runs)
        # Rung 10 with 3 runs: asha keeps the top ceil(3/3) = 1, a; b and c are asked to stop.
        requests = {run: sweep.dir.run(run).stop_request() for run in ("a", "b", "c")}
        assert requests["a"] is None
        assert requests["b"]["rule"] == "asha" and requests["b"]["step"] == 10
        assert requests["b"]["reason"].startswith("top-1 0.5000 at the rung of step 10 ranks 2")
        assert requests["c"]["at_rung"] == {"a": 0.9, "b": 0.5, "c": 0.1}
        assert session.stops_made == 2

        # Their trainers save once more before stopping: never scored, never judged again,
        # though these would now lead the sweep.
        for run in ("a", "b", "c"):
            sweep.checkpoint(run, 20)
        sweep.complete("a")
        with open(sweep.dir.run("b").stop_uri) as f:
            written = f.read()
        while session.round(runs):
            pass
        assert scored_steps(sweep, "b") == [10] and scored_steps(sweep, "c") == [10]
        assert scored_steps(sweep, "a") == [10, 20]
        assert session.stops_made == 2
        with open(sweep.dir.run("b").stop_uri) as f:
            assert f.read() == written
        assert session.finished(runs)  # stopped runs are done, without complete.json

        board = session.refresh_leaderboard()
        rows = {row["run"]: row for row in board["runs"]}
        assert rows["a"]["stopped"] is None
        assert rows["b"]["stopped"] == {"rule": "asha", "step": 10,
                                        "reason": requests["b"]["reason"]}  # fmt: skip
        assert [s["run"] for s in board["stopped"]] == ["b", "c"]
        assert board["lag"]["b"] == {"waiting": 0, "oldest_s": 0.0}
        assert session.metrics.stopped_runs._value.get() == 2
    finally:
        session.close()

    # A restarted evaluator reads the stop requests: it scores and stops nothing again.
    again = session_for(sweep, top1)
    try:
        runs = again.runs()
        assert not again.round(runs)
        assert again.scored_order == [] and again.stops_made == 0
        assert again.finished(runs)
    finally:
        again.close()


def test_newest_checkpoint_of_each_run_first_then_the_skipped_ones(tmp_path, data: str) -> None:  # noqa: ANN001
    sweep = Sweep(str(tmp_path / "sweep"), data, layout.EarlyStop(), ("a", "b"))
    top1 = {(run, step): 0.5 for run in ("a", "b") for step in (10, 20, 30, 40)}
    sweep.checkpoint("a", 10, 20, 30)
    sweep.checkpoint("b", 10)
    written = time.time() - 120  # a-10 waited two minutes before this evaluator started
    os.utime(os.path.join(sweep.dir.run("a").checkpoints_dir, "ckpt-10.index"), (written, written))
    session = session_for(sweep, top1)
    try:
        runs = session.runs()
        assert session.round(runs)
        assert session.scored_order == [("a", 30), ("b", 10)]  # the newest of each, round robin
        assert session.lag["a"]["waiting"] == 2 and session.backlog(runs) == 2
        assert session.metrics.waiting.labels("a")._value.get() == 2
        # The age of the oldest waiting counts from when it was written, not first seen.
        assert 120 <= session.lag["a"]["oldest_s"] < 180
        assert session.metrics.oldest_waiting.labels("a")._value.get() >= 120
        sweep.checkpoint("b", 20)  # news again: before any catching up
        session.round(runs)
        assert session.scored_order[2:] == [("b", 20)]
        session.round(runs)  # no news: catch up, newest skipped first
        session.round(runs)
        assert session.scored_order[3:] == [("a", 20), ("a", 10)]
        assert session.backlog(runs) == 0 and session.lag["a"] == {"waiting": 0, "oldest_s": 0.0}

        # The watch loop never ends with a checkpoint unscored.
        sweep.checkpoint("a", 40)
        sweep.checkpoint("b", 30, 40)
        sweep.complete("a")
        sweep.complete("b")
        board, finished = watch._watch(session, session.options)
        assert finished
        assert scored_steps(sweep, "a") == [10, 20, 30, 40]
        assert scored_steps(sweep, "b") == [10, 20, 30, 40]
        assert board["stopped"] == [] and board["lag"]["b"]["waiting"] == 0
    finally:
        session.close()


def test_median_rule_from_sweep_json_and_a_nan_stopped_run_marked(tmp_path, data: str) -> None:  # noqa: ANN001
    rule = layout.EarlyStop("median", 10)
    sweep = Sweep(str(tmp_path / "sweep"), data, rule, ("a", "b", "c", "d"))
    top1 = {("a", 10): 0.8, ("b", 10): 0.6, ("c", 10): 0.2}
    for run in ("a", "b", "c"):
        sweep.checkpoint(run, 10)
    # d diverged: the trainer stopped it itself, nothing to score.
    stopped = {"by": "trainer", "rule": "nan", "step": 3, "reason": "the loss is nan at step 3"}
    sweep.dir.run("d").save_complete({"final_step": 0, "stopped": stopped})
    session = session_for(sweep, top1)
    try:
        runs = session.runs()
        session.round(runs)
        assert sweep.dir.run("c").stop_request()["median"] == pytest.approx(0.7)
        assert sweep.dir.run("b").stop_request() is None
        board = session.refresh_leaderboard()
        assert [(s["run"], s["rule"]) for s in board["stopped"]] == [("c", "median"), ("d", "nan")]
        with open(sweep.dir.leaderboard_uri) as f:
            assert json.load(f)["stopped"] == board["stopped"]
    finally:
        session.close()


def test_a_checkpoint_deleted_before_its_time_is_read_counts_from_now(tmp_path) -> None:  # noqa: ANN001
    # Listed, then removed by the trainer's keep-N before the evaluator read its time.
    gone = layout.Checkpoint(10, str(tmp_path / "checkpoints" / "ckpt-10"))
    before = time.time()
    assert before <= watch.written_at(gone) <= time.time()


def test_rung_checkpoints_are_left_to_a_trainer_that_judges_itself(tmp_path, data: str) -> None:  # noqa: ANN001
    """Run t's trainer scores and judges its rungs (hparams.json's `rungs`): the evaluator
    never scores a rung checkpoint the trainer scored, waits for the trainer on one it has not
    scored yet, takes the trainer's results in, and never judges t, though its rule would stop
    it; once t is complete, a rung checkpoint left unscored is the evaluator's."""
    from common import results

    sweep = Sweep(str(tmp_path / "sweep"), data, layout.EarlyStop("asha", 10, 3), ("a", "t"))
    t = sweep.dir.run("t")
    t.save_hparams({"data": data, "image_size": 75, "steps": STEPS, "rungs": [10, 30, 90]})
    top1 = {("a", 10): 0.9, ("a", 20): 0.9, ("t", 20): 0.3, ("t", 30): 0.2}
    sweep.checkpoint("a", 10, 20)
    sweep.checkpoint("t", 10, 20, 30)
    trainer_result = {"step": 10, "checkpoint": "ckpt-10", "top1": 0.1, "loss": 2.0,
                      "scored_by": "trainer", "precision": "float32", "examples": 6}  # fmt: skip
    results.record(t.eval_dir, trainer_result)
    session = session_for(sweep, top1)
    try:
        runs = session.runs()
        while session.round(runs):
            pass
        assert ("t", 10) not in session.scored_order and ("t", 30) not in session.scored_order
        assert scored_steps(sweep, "t") == [10, 20]  # rung 10 the trainer's, 20 ours
        view = results.read_view(t.eval_dir)  # results.jsonl
        assert [(e["step"], e["scored_by"]) for e in view] == [(10, "trainer"), (20, "evaluator")]
        assert t.stop_request() is None  # 0.1 at rung 10 against a's 0.9: asha would stop it
        assert session.pending(t) == []  # rung 30 waits for the trainer

        sweep.complete("t")
        sweep.complete("a")
        while session.round(runs):
            pass
        assert session.scored_order.count(("t", 30)) == 1 and ("t", 10) not in session.scored_order
        assert session.finished(runs)
    finally:
        session.close()
