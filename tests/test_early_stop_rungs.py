"""Trainers that judge themselves at rungs (trainer.rungs), as real processes in a real sweep
directory: a sweep.json with asha (grace 3, eta 3: rungs at steps 3 and 9 of 12), tiny
images, random weights, no evaluator. What a user sees: each rung's result recorded once, by
the trainer, in the run's results store; a verdict that is the rule's on the results on
record, in stop.json and complete.json; the same verdict the evaluator's rule reaches.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from common import layout, results
from tests.trainer_testdata import QUICK, run_trainer, start_trainer, wait_for, write_dataset

pytest.importorskip("tensorflow")

STEPS = 12
BASE = [*QUICK, "--batch-size", "4", "--steps", str(STEPS), "--checkpoint-every", "5",
        "--log-every", "1"]  # fmt: skip
# The head only: what is judged is a run's results, not how they were trained, and such a
# trainer runs in half the time.
FLAGS = [*BASE, "--fine-tune", "head"]
# A run paused between its rungs trains every layer: at about 0.6 s a step on 2 cores, the
# SIGTERM has seconds to land before rung 9 (the head alone steps in 0.04 s).
PAUSABLE = BASE
ASHA = layout.EarlyStop("asha", grace=3, eta=3)
DIVERGES = ["--lr", "1e5"]  # training loss about 4e4 by step 3, finite


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:  # noqa: ANN001
    path = str(tmp_path_factory.mktemp("rungs") / "data")
    write_dataset(path, train_per_class=8, val_per_class=2)
    return path


def make_sweep(root: str, data: str, *runs: str, rule: layout.EarlyStop = ASHA) -> layout.SweepDir:
    sweep = layout.SweepDir(root)
    candidates = [layout.Candidate(name, 0.01) for name in runs]
    sweep.save(layout.Sweep("s", data, candidates, early_stop=rule))
    return sweep


def stored(run: layout.RunDir) -> dict[int, dict]:
    """The run's results store, by step (each step is one create-only object)."""
    return {e["step"]: e for e in results.read_store(run.eval_dir)}


def finished_run(sweep: layout.SweepDir, name: str, data: str, top1: float, loss: float) -> None:
    """A run that trained to the end earlier, with its rung results on record (as a trainer
    or an evaluator records them)."""
    run = sweep.run(name)
    run.save_hparams({"data": data, "image_size": 75, "steps": STEPS, "rungs": [3, 9]})
    for step in (3, 9, STEPS):
        results.record(run.eval_dir, {"step": step, "checkpoint": f"ckpt-{step}", "top1": top1,
                                      "loss": loss, "scored_by": "trainer"})  # fmt: skip
    run.save_complete({"final_step": STEPS})


def pause_past_rung_3(data: str, run: layout.RunDir, log: str) -> int:
    """Train the run until it went on at rung 3, then SIGTERM it (it checkpoints and exits 0);
    the step it paused at, between the rungs, with no verdict on record."""
    proc = start_trainer(data, run.uri, *PAUSABLE, log_path=log)
    try:
        wait_for(lambda: f"rung step 3: {run.name} goes on" in _read(log), 300,
                 "the rung verdict", proc)  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, _read(log)
    finally:
        proc.kill()
    paused = run.latest_checkpoint_step()
    assert paused is not None and 3 < paused < 9 and not os.path.exists(run.stop_uri)
    return paused


def test_a_run_first_at_its_rungs_scores_itself_and_goes_on(data: str, tmp_path) -> None:  # noqa: ANN001
    sweep = make_sweep(str(tmp_path / "sweep"), data, "a")
    run = sweep.run("a")
    done = run_trainer(data, run.uri, *FLAGS, timeout=300)
    assert done.returncode == 0, done.stderr
    assert run.hparams()["rungs"] == [3, 9]  # written before step 1, for the evaluator
    rung_results = stored(run)
    assert sorted(rung_results) == [3, 9]
    for step, entry in rung_results.items():
        assert (entry["scored_by"], entry["precision"]) == ("trainer", "float32")
        assert entry["examples"] == 6 and 0 <= entry["top1"] <= 1
        assert entry["checkpoint"].endswith(f"checkpoints/ckpt-{step}")
        assert entry["seconds"] > 0 and entry["train_loss"] > 0
        assert json.loads(_read(entry["confusion"]))["step"] == step
    assert "rung step 3: a goes on (1 of the sweep's runs have reached this step)" in done.stderr
    assert not os.path.exists(run.stop_uri)
    complete = run.complete()
    assert complete["final_step"] == STEPS and "stopped" not in complete


def test_an_absurd_loss_is_stopped_at_its_first_rung(data: str, tmp_path) -> None:  # noqa: ANN001
    """First at the rung, so asha alone would let it go on: the absurd loss stops it."""
    sweep = make_sweep(str(tmp_path / "sweep"), data, "wild")
    run = sweep.run("wild")
    done = run_trainer(data, run.uri, *FLAGS, *DIVERGES, timeout=300)
    assert done.returncode == 0, done.stderr
    stop = run.stop_request()
    assert (stop["by"], stop["rule"], stop["step"]) == ("trainer", "asha", 3)
    assert re.fullmatch(r"training loss \S+ at step 3 is finite but beyond 1000 \(validation "
                        r"top-1 \S+\): the run has diverged", stop["reason"])  # fmt: skip
    complete = run.complete()
    assert complete["final_step"] == 3 and complete["stopped"]["reason"] == stop["reason"]
    assert complete["stopped"]["by"] == "trainer"
    assert not os.path.exists(run.export_dir)
    assert sorted(stored(run)) == [3]


def test_the_trainers_stop_is_the_one_the_evaluators_rule_makes(data: str, tmp_path) -> None:  # noqa: ANN001
    """A run worse than one already done: stopped at rung 3 by its own trainer; the evaluator,
    judging the same results on record, writes the same verdict."""
    from evaluator import watch
    from evaluator.metrics import EvalMetrics

    sweep = make_sweep(str(tmp_path / "sweep"), data, "done", "late")
    finished_run(sweep, "done", data, top1=1.0, loss=0.01)
    late = sweep.run("late")
    ran = run_trainer(data, late.uri, *FLAGS, timeout=300)
    assert ran.returncode == 0, ran.stderr
    by_trainer = late.stop_request()
    assert (by_trainer["by"], by_trainer["step"], by_trainer["rung"]) == ("trainer", 3, 3)
    assert by_trainer["reason"].startswith(f"top-1 {stored(late)[3]['top1']:.4f} at the rung")
    assert late.complete()["stopped"]["reason"] == by_trainer["reason"]

    # The same results, judged by the evaluator as it judges an older sweep's runs (no
    # `rungs` in hparams.json: the evaluator is the judge), before any stop.
    os.remove(late.stop_uri)
    os.remove(late.complete_uri)
    hparams = late.hparams()
    del hparams["rungs"]
    late.save_hparams(hparams)
    session = watch.Session(watch.Options(target=sweep.uri, sweep=True, metrics=EvalMetrics()))
    session.start()
    try:
        runs = session.runs()
        for run in runs:
            session.setup(run)
            session.take_in(run)
        session.apply_early_stop(runs)
    finally:
        session.close()
    by_evaluator = late.stop_request()
    ignore = {"by", "requested"}
    assert {k: v for k, v in by_evaluator.items() if k not in ignore} == {
        k: v for k, v in by_trainer.items() if k not in ignore
    }


def test_two_trainers_racing_to_one_rung(data: str, tmp_path) -> None:  # noqa: ANN001
    """Started together: each records its rung result, then reads the others'. Whoever judges
    second sees both (the store is read after its own write): if it is the worse of the two at
    the rung it stops there, keep ceil(2/3) = 1. The first went on, alone at the time, and is
    judged again at its next checkpoint (step 5): if it is the worse and the other has reached
    the rung by then, it stops at step 5, not at the end."""
    sweep = make_sweep(str(tmp_path / "sweep"), data, "one", "two")
    logs = {name: str(tmp_path / f"{name}.log") for name in ("one", "two")}
    procs = {
        name: start_trainer(data, sweep.run(name).uri, *FLAGS, "--seed", str(seed),
                            "--lr", lr, "--steps", "6", log_path=logs[name])
        for (name, seed, lr) in (("one", 1, "0.01"), ("two", 2, "0.001"))
    }  # fmt: skip
    try:
        for proc in procs.values():
            assert proc.wait(timeout=400) == 0
    finally:
        for proc in procs.values():
            proc.kill()
    seen = {}
    for name, log in logs.items():
        text = _read(log)
        assert len(re.findall(r"rung step 3: top-1 \S+, loss \S+ over 6 validation images "
                              r"\(scored here", text)) == 1, text  # fmt: skip
        seen[name] = 2 if "ranks" in text or "(2 of the sweep's runs" in text else 1
        assert sorted(stored(sweep.run(name))) == [3]  # rung 3 only: 9 is past step 6
    assert max(seen.values()) == 2, seen  # the later one saw both
    scores = {n: stored(sweep.run(n))[3] for n in logs}
    order = sorted(logs, key=lambda n: (scores[n]["top1"], -scores[n]["loss"]), reverse=True)
    best, worst = order
    assert not os.path.exists(sweep.run(best).stop_uri)  # the better one is never stopped
    worst_log = _read(logs[worst])
    if "rung step 3: stopping" in worst_log:  # judged second, at the rung
        assert sweep.run(worst).stop_request()["rung"] == 3
        assert sweep.run(worst).complete()["final_step"] == 3
    elif "judged again at the rung of step 3" in worst_log:  # went on first, judged at step 5
        again = re.search(r"step (\d+): stopping \S+ \(asha\), judged again at the rung of "
                          r"step 3 now that 2 of the sweep's runs have reached it", worst_log)
        assert again and int(again[1]) in (4, 5), worst_log  # its next checkpoint, not the end
        assert sweep.run(worst).stop_request()["rung"] == 3
        assert sweep.run(worst).complete()["final_step"] == int(again[1])
    else:  # went on first, and the other had not reached the rung by step 5
        assert "rung step 3: " + worst + " goes on (1 of" in worst_log, worst_log
        assert sweep.run(worst).complete()["final_step"] == 6


def test_a_restart_at_a_rung_judges_it_then(data: str, tmp_path) -> None:  # noqa: ANN001
    """Killed (SIGKILL) after the rung checkpoint was saved, before its result: the restarted
    trainer resumes from that checkpoint and scores and judges it first."""
    sweep = make_sweep(str(tmp_path / "sweep"), data, "done", "killed")
    finished_run(sweep, "done", data, top1=1.0, loss=0.01)
    run = sweep.run("killed")
    log = str(tmp_path / "first.log")
    proc = start_trainer(data, run.uri, *FLAGS, log_path=log)
    try:
        wait_for(lambda: run.latest_checkpoint_step() == 3, 300, "the rung checkpoint", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    if stored(run):  # the pass (tracing included) takes seconds: this is very unlikely
        pytest.skip("the kill came after the rung's result was recorded")
    assert not os.path.exists(run.stop_uri)
    started = time.time()
    again = run_trainer(data, run.uri, *FLAGS, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resumed from checkpoint at step 3" in again.stderr
    entry = stored(run)[3]
    assert entry["scored_by"] == "trainer" and entry["time"] >= started
    assert "train_loss" not in entry  # the loss of step 3 died with the first process
    # Worse than `done` at rung 3 (top-1 1.0): stopped there, at once, without training on.
    stop = run.stop_request()
    assert (stop["by"], stop["step"]) == ("trainer", 3)
    assert run.complete()["final_step"] == 3
    assert "step 4, loss" not in again.stderr


def test_a_run_that_went_on_first_is_judged_again_once_the_others_reach_the_rung(
    data: str,
    tmp_path,  # noqa: ANN001
) -> None:
    """First at rung 3 of a sweep of three, it goes on; the other two then reach the rung and
    beat it. Judged again on the results on record (here, resumed between rungs after a
    SIGTERM), it stops without waiting for rung 9: the order runs reach a rung in is chance."""
    sweep = make_sweep(str(tmp_path / "sweep"), data, "first", "b", "c")
    run = sweep.run("first")
    paused = pause_past_rung_3(data, run, str(tmp_path / "first.log"))
    finished_run(sweep, "b", data, top1=1.0, loss=0.01)
    finished_run(sweep, "c", data, top1=1.0, loss=0.02)
    again = run_trainer(data, run.uri, *PAUSABLE, timeout=300)
    assert again.returncode == 0, again.stderr
    assert (f"step {paused}: stopping first (asha), judged again at the rung of step 3 now that "
            "3 of the sweep's runs have reached it: top-1") in again.stderr  # fmt: skip
    stop = run.stop_request()
    assert (stop["by"], stop["rung"], stop["keep"]) == ("trainer", 3, 1)
    assert run.complete()["final_step"] == paused
    assert sorted(stored(run)) == [3]  # its rung result stood: scored once


def test_a_run_whose_best_is_patience_steps_old_stops_between_rungs(
    data: str,
    tmp_path,  # noqa: ANN001
) -> None:
    """Alone at rung 3, asha lets it go on, and its best (step 1, as an evaluator recorded it)
    is 2 steps old: within a patience of 3. Paused between rungs, the evaluator scores the
    checkpoint it left, worse; resumed, it stops there on that result, without rung 9."""
    rule = layout.EarlyStop("asha", grace=3, eta=3, patience=3)
    sweep = make_sweep(str(tmp_path / "sweep"), data, "a", rule=rule)
    run = sweep.run("a")
    results.record(run.eval_dir, {"step": 1, "checkpoint": "ckpt-1", "top1": 1.0, "loss": 0.0,
                                  "scored_by": "evaluator"})  # fmt: skip
    paused = pause_past_rung_3(data, run, str(tmp_path / "a.log"))
    results.record(run.eval_dir, {"step": paused, "checkpoint": f"ckpt-{paused}", "top1": 0.5,
                                  "loss": 1.0, "scored_by": "evaluator"})  # fmt: skip
    again = run_trainer(data, run.uri, *PAUSABLE, timeout=300)
    assert again.returncode == 0, again.stderr
    reason = (f"its best top-1 1.0000 (loss 0) at step 1 has not improved in the {paused - 1} "
              f"steps to step {paused} (patience 3 steps)")  # fmt: skip
    assert f"step {paused}: stopping a (asha): {reason}" in again.stderr
    stop = run.stop_request()
    assert (stop["by"], stop["step"], stop["best_step"]) == ("trainer", paused, 1)
    assert stop["reason"] == reason
    assert run.complete()["final_step"] == paused
