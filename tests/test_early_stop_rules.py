"""The early-stopping rules as pure functions on made-up score histories (common.early_stop),
and their parameters in sweep.json (common.layout.EarlyStop)."""

from __future__ import annotations

import pytest

from common import early_stop as stopping
from common.cli import UserError
from common.layout import EarlyStop, Sweep

ASHA = EarlyStop("asha", grace=10, eta=3)
MEDIAN = EarlyStop("median", grace=10)


def linear(*top1s: float, every: int = 10) -> list[tuple[int, float]]:
    """A history evaluated every `every` steps."""
    return [(every * (i + 1), t) for i, t in enumerate(top1s)]


def stopped(rule: EarlyStop, histories: dict, running: set | None = None, total: int = 100):
    running = set(histories) if running is None else running
    return {s.run: s for s in stopping.decide(rule, histories, running, total)}


# ---------------------------------------------------------------- shared


def test_none_never_stops() -> None:
    histories = {"a": linear(0.9, 0.9, 0.9), "b": linear(0.1, 0.1, 0.1), "c": linear(0.1, 0, 0)}
    assert stopped(EarlyStop(), histories) == {}


@pytest.mark.parametrize("rule", [ASHA, MEDIAN])
def test_a_single_run_is_never_stopped(rule: EarlyStop) -> None:
    assert stopped(rule, {"a": linear(0.1, 0.0, 0.0, 0.0)}) == {}


@pytest.mark.parametrize("rule", [ASHA, MEDIAN])
def test_nothing_is_stopped_before_the_grace_period(rule: EarlyStop) -> None:
    histories = {"a": linear(0.9, 0.9, every=5), "b": linear(0.8, 0.8, every=5),
                 "c": linear(0.0, 0.0, every=5)}  # fmt: skip
    late = EarlyStop(rule.rule, grace=11, eta=3)
    assert stopped(late, histories) == {}  # c's latest evaluation is at step 10
    assert "c" in stopped(EarlyStop(rule.rule, grace=10, eta=3), histories)


@pytest.mark.parametrize("rule", [ASHA, MEDIAN])
def test_the_current_best_run_is_never_stopped_even_when_tied(rule: EarlyStop) -> None:
    # a and b share the best top-1 seen: both are protected, whatever the rule says.
    histories = {"a": linear(0.5, 0.5, 0.5), "b": linear(0.1, 0.5, 0.0),
                 "c": linear(0.0, 0.0, 0.0), "d": linear(0.4, 0.4, 0.4)}  # fmt: skip
    verdicts = stopped(rule, histories)
    assert "a" not in verdicts and "b" not in verdicts
    assert "c" in verdicts


@pytest.mark.parametrize("rule", [ASHA, MEDIAN])
def test_done_runs_are_not_judged_but_still_count(rule: EarlyStop) -> None:
    histories = {"a": linear(0.9, 0.9, 0.9), "b": linear(0.1, 0.1, 0.1), "c": linear(0.2, 0.2, 0.2),
                 "d": linear(0.0, 0.0, 0.0)}  # fmt: skip
    # Only d is still running; a, b and c are complete or stopped, and d compares with them.
    assert set(stopped(rule, histories, running={"d"})) == {"d"}
    assert stopped(rule, histories, running=set()) == {}


def test_default_grace_is_a_tenth_of_the_steps_and_unknown_without_them() -> None:
    assert stopping.grace_steps(EarlyStop("asha"), 1000) == 100
    assert stopping.grace_steps(EarlyStop("asha"), 5) == 1
    assert stopping.grace_steps(EarlyStop("asha"), None) is None
    assert stopping.grace_steps(EarlyStop("asha", grace=7), None) == 7
    histories = {"a": linear(0.9, 0.9), "b": linear(0.5, 0.5), "c": linear(0.0, 0.0)}
    assert stopping.decide(EarlyStop("asha"), histories, set(histories), None) == []


# ---------------------------------------------------------------- median


def test_median_stops_a_run_below_the_median_of_the_others_running_averages() -> None:
    histories = {"a": linear(0.5, 0.7, 0.9), "b": linear(0.4, 0.6, 0.6), "c": linear(0.3, 0.4, 0.5)}
    # At step 30: a's running average is 0.7, b's 0.5333; c's best (0.5) is below their median.
    verdicts = stopped(MEDIAN, histories)
    assert set(verdicts) == {"c"}
    stop = verdicts["c"]
    assert (stop.rule, stop.step) == ("median", 30)
    assert stop.figures["best_top1"] == 0.5
    assert stop.figures["median"] == pytest.approx((0.7 + (0.4 + 0.6 + 0.6) / 3) / 2)
    assert stop.reason.startswith("best top-1 0.5000 by step 30 is below the median 0.6167")
    assert stop.record()["reason"] == stop.reason and stop.record()["rule"] == "median"


def test_median_equal_to_the_median_is_not_stopped() -> None:
    histories = {"a": linear(0.75, 0.75), "b": linear(0.25, 0.25), "c": linear(0.5, 0.5)}
    assert set(stopped(MEDIAN, histories)) == {"b"}  # c's best 0.5 == median(0.75, 0.25)


def test_median_needs_two_other_runs_that_reached_the_step() -> None:
    histories = {"a": linear(0.9, 0.9, 0.9), "b": linear(0.8), "c": linear(0.1, 0.1, 0.1)}
    # b (running) has not reached step 30 yet: only a counts for c, too few.
    assert stopped(MEDIAN, histories) == {}
    # Once b is done (stopped or complete) its history counts as it is.
    assert set(stopped(MEDIAN, histories, running={"c"})) == {"c"}


def test_median_judges_a_late_run_at_its_own_step() -> None:
    # d started late: at its step 20 it is compared with the others' averages up to step 20.
    histories = {"a": linear(0.5, 0.6, 0.7, 0.8), "b": linear(0.4, 0.5, 0.6, 0.7),
                 "c": linear(0.2, 0.3, 0.4, 0.5), "d": linear(0.3, 0.4)}  # fmt: skip
    verdicts = stopped(MEDIAN, histories, running={"d"})
    assert set(verdicts) == {"d"}
    assert verdicts["d"].figures["running_averages"] == pytest.approx(
        {"a": 0.55, "b": 0.45, "c": 0.25}
    )
    good_late = {**histories, "d": linear(0.5, 0.5)}
    assert stopped(MEDIAN, good_late, running={"d"}) == {}


# ---------------------------------------------------------------- asha


def test_asha_rungs() -> None:
    assert stopping.rung_steps(10, 3, 100, {}) == [10, 30, 90]
    assert stopping.rung_steps(10, 2, 80, {}) == [10, 20, 40]
    assert stopping.rung_steps(10, 3, None, {"a": [(35, 0.1)]}) == [10, 30]
    assert stopping.rung_value([(5, 0.2), (12, 0.1), (20, 0.5)], 10) == 0.2  # best up to step 12
    assert stopping.rung_value([(5, 0.2)], 10) is None


def test_asha_keeps_the_top_third_at_a_rung() -> None:
    histories = {"a": linear(0.9), "b": linear(0.8), "c": linear(0.7), "d": linear(0.6),
                 "e": linear(0.5)}  # fmt: skip
    verdicts = stopped(ASHA, histories)
    assert set(verdicts) == {"c", "d", "e"}  # ceil(5 / 3) = 2 go on
    stop = verdicts["c"]
    assert stop.figures["rung"] == 10 and stop.figures["keep"] == 2
    assert stop.figures["cutoff"] == 0.8
    assert stop.reason == (
        "top-1 0.7000 at the rung of step 10 ranks 3 of 5 runs there; asha keeps the top 2 "
        "(1/3, at least 0.8000)"
    )


def test_asha_ties_go_on() -> None:
    histories = {"a": linear(0.9), "b": linear(0.5), "c": linear(0.5), "d": linear(0.5),
                 "e": linear(0.1)}  # fmt: skip
    # keep 2: b, c and d tie for second place and all go on; e is below them.
    assert set(stopped(ASHA, histories)) == {"e"}


def test_asha_early_arrivals_go_on_until_others_reach_the_rung() -> None:
    histories = {"a": linear(0.2, 0.2, 0.2), "b": linear(0.1, 0.1, 0.1)}
    # b alone at rung 30 (a has not got there): top of one.
    histories["a"] = linear(0.2, 0.2)
    assert set(stopped(ASHA, histories)) == set()
    # a reaches step 30 better than b: keep ceil(2/3) = 1 at rung 30, b goes.
    histories["a"] = linear(0.2, 0.2, 0.3)
    assert set(stopped(ASHA, histories)) == {"b"}


def test_asha_a_late_run_is_judged_against_every_run_that_reached_the_rung() -> None:
    done = {"a": linear(0.6, 0.7, 0.8), "b": linear(0.5, 0.5, 0.5), "c": linear(0.1, 0.1, 0.1)}
    late = {**done, "d": linear(0.4)}  # ranks 3 of 4 at rung 10, keep 2
    assert set(stopped(ASHA, late, running={"d"})) == {"d"}
    assert stopped(ASHA, {**done, "d": linear(0.55)}, running={"d"}) == {}


def test_asha_a_run_best_at_one_rung_and_not_the_next() -> None:
    # b leads a at rung 10 but a overtakes it by rung 30, where c and d also arrive.
    histories = {
        "a": linear(0.3, 0.5, 0.9),
        "b": linear(0.6, 0.6, 0.6),
        "c": linear(0.2, 0.3, 0.4),
        "d": linear(0.1, 0.2, 0.2),
    }
    at_rung_10 = {run: points[:1] for run, points in histories.items()}
    assert set(stopped(ASHA, at_rung_10)) == {"c", "d"}  # keep ceil(4/3) = 2: b and a
    # At step 30 only the top ceil(4/3) = 2 go on: a (0.9) and b (0.6). With a fifth run
    # better than b at rung 30, b, the best at rung 10, is stopped there.
    histories["e"] = linear(0.5, 0.7, 0.8)
    verdicts = stopped(ASHA, histories, running={"b", "c", "d"})
    assert "b" in verdicts and verdicts["b"].figures["rung"] == 30
    assert verdicts["b"].figures["at_rung"]["b"] == 0.6


def test_asha_eta_2_keeps_half() -> None:
    histories = {"a": linear(0.9), "b": linear(0.8), "c": linear(0.7), "d": linear(0.6)}
    assert set(stopped(EarlyStop("asha", grace=10, eta=2), histories)) == {"c", "d"}


# ---------------------------------------------------------------- sweep.json


def test_sweep_json_without_or_with_the_old_early_stop_entry_loads() -> None:
    base = {"name": "s", "data": "/d", "candidates": [{"run": "lr-0.1", "lr": 0.1}]}
    assert Sweep.from_dict(base).early_stop == EarlyStop()
    assert Sweep.from_dict({**base, "early_stop": {"rule": "none"}}).early_stop == EarlyStop()
    sweep = Sweep.from_dict({**base, "early_stop": {"rule": "asha", "grace": 50, "eta": 4}})
    assert sweep.early_stop == EarlyStop("asha", 50, 4)
    assert Sweep.from_dict(sweep.to_dict()) == sweep
    assert sweep.to_dict()["early_stop"] == {"rule": "asha", "grace": 50, "eta": 4,
                                             "patience": None}  # fmt: skip
    with_patience = Sweep.from_dict({**base, "early_stop": {"rule": "asha", "patience": 30}})
    assert with_patience.early_stop == EarlyStop("asha", None, 3, 30)
    described = "asha (grace a tenth of the steps, eta 3, patience 30 steps)"
    assert with_patience.early_stop.describe() == described


@pytest.mark.parametrize(
    "bad",
    [{"rule": "hyperband"}, {"rule": "asha", "eta": 1}, {"rule": "asha", "grace": 0}, "asha",
     {"rule": "median", "grace": 2.5}, {"rule": "asha", "patience": -1},
     {"rule": "asha", "patience": True}],
)  # fmt: skip
def test_a_bad_early_stop_entry_is_one_sentence(bad: object) -> None:
    data = {"name": "s", "data": "/d", "candidates": [], "early_stop": bad}
    with pytest.raises(UserError, match=r"^sweep.json is not a valid sweep description \("):
        Sweep.from_dict(data)


# ---------------------------------------------------------------- ties, absurd losses, rungs


def scored(*pairs: tuple[float, float], every: int = 10) -> list[stopping.Score]:
    """A history of (top-1, loss) evaluated every `every` steps."""
    return [stopping.Score(every * (i + 1), t, loss) for i, (t, loss) in enumerate(pairs)]


def test_asha_breaks_a_tie_at_the_cutoff_by_validation_loss() -> None:
    # Five runs at top-1 0.55 (a small validation split): keep 2, the two lowest losses.
    histories = {name: scored((0.55, loss)) for name, loss in
                 (("a", 0.61), ("b", 0.70), ("c", 0.64), ("d", 0.90), ("e", 0.75))}  # fmt: skip
    verdicts = stopped(ASHA, histories)
    assert set(verdicts) == {"b", "d", "e"}
    assert verdicts["b"].reason == (
        "top-1 0.5500 at the rung of step 10 ranks 3 of 5 runs there; asha keeps the top 2 "
        "(1/3, at least 0.5500; tied on top-1, its loss 0.7 is above the cutoff's 0.64)"
    )
    assert verdicts["b"].figures["at_rung_loss"]["a"] == 0.61
    # Without losses (results of an older evaluator) the tie still goes to the runs.
    assert stopped(ASHA, {n: [(10, 0.55)] for n in "abcde"}) == {}


def test_the_best_run_is_the_lowest_loss_among_equal_top1() -> None:
    histories = {"a": scored((0.5, 0.9)), "b": scored((0.5, 0.4)), "c": scored((0.5, 0.6))}
    assert stopping.leaders(histories) == {"b"}
    # keep ceil(3/3) = 1: b, by its loss; a and c go although their top-1 equals b's.
    assert set(stopped(ASHA, histories)) == {"a", "c"}


def test_median_tie_goes_to_the_lower_loss() -> None:
    histories = {"a": scored((0.75, 0.3)), "b": scored((0.25, 2.0)), "c": scored((0.5, 1.5)),
                 "d": scored((0.5, 0.2))}  # fmt: skip
    # For c the others' (a, b, d) running averages are 0.75, 0.25, 0.5: median 0.5, its own
    # best; their losses' median is 0.3 and c's 1.5 is above it. d ties the median the same
    # way, with a loss below its others' (a, b, c: median of 0.3, 2.0 and 1.5 is 1.5).
    verdicts = stopped(MEDIAN, histories)
    assert "c" in verdicts and "d" not in verdicts
    assert "equals the median" in verdicts["c"].reason and "1.5 is above" in verdicts["c"].reason


def test_an_absurd_training_loss_is_stopped_at_the_first_rung_even_alone_and_best() -> None:
    # First at the rung (asha lets it go on) and the best top-1 so far (protected): its
    # training loss is finite, but no run that still learns has a loss of 4e13.
    alone = {"a": [stopping.Score(10, 0.3, 2.5, 4e13)]}
    for rule in (ASHA, MEDIAN):
        [stop] = stopping.decide(rule, alone, {"a"}, 100)
        assert stop.step == 10 and stop.figures["train_loss"] == 4e13
        assert stop.reason == (
            "training loss 4e+13 at step 10 is finite but beyond 1000 (validation top-1 0.3000): "
            "the run has diverged"
        )
    # Before the grace period nothing is judged, absurd or not.
    assert stopping.decide(EarlyStop("asha", grace=20), alone, {"a"}, 100) == []
    # A merely bad run (loss 25) is the rule's business; a huge validation loss alone is what
    # random weights show while batch normalisation's averages warm up.
    assert stopping.decide(ASHA, {"a": [stopping.Score(10, 0.3, 6e9, 25.0)]}, {"a"}, 100) == []


def test_judge_limits_who_may_be_stopped_but_everyone_counts() -> None:
    histories = {"a": linear(0.9), "b": linear(0.5), "c": linear(0.1)}
    assert set(stopped(ASHA, histories)) == {"b", "c"}
    only_c = stopping.decide(ASHA, histories, set(histories), 100, judge={"c"})
    assert [s.run for s in only_c] == ["c"] and only_c[0].figures["keep"] == 1


def test_rung_schedule_where_a_trainer_judges_itself() -> None:
    assert stopping.rung_schedule(EarlyStop("asha", grace=10, eta=3), 100) == [10, 30, 90]
    assert stopping.rung_schedule(EarlyStop("asha"), 120) == [12, 36, 108]  # grace: a tenth
    assert stopping.rung_schedule(EarlyStop("median", grace=25), 100) == [25, 50, 75]
    assert stopping.rung_schedule(EarlyStop("asha", grace=100), 100) == []  # nothing to save
    assert stopping.rung_schedule(EarlyStop(), 100) == []


def test_scores_of_a_results_store() -> None:
    entries = [{"step": 20, "top1": 0.5, "loss": 1.2}, {"step": 10, "error": "unreadable"},
               {"step": 5, "top1": 0.25}]  # fmt: skip
    assert stopping.scores_of(entries) == [(5, 0.25, None, None), (20, 0.5, 1.2, None)]
    assert stopping.scores_of([{"step": 3, "top1": 0.1, "loss": 9.0, "train_loss": 3e8}]) == [
        (3, 0.1, 9.0, 3e8)
    ]


# ---------------------------------------------------------------- patience


@pytest.mark.parametrize("rule", ["asha", "median"])
def test_patience_stops_a_run_whose_best_is_that_old_the_best_run_included(rule: str) -> None:
    """The best run peaked at step 10 and only drifted since; the rule alone would let it go
    on to the end."""
    histories = {"best": linear(0.9, 0.8, 0.8, 0.85), "b": linear(0.5, 0.6, 0.7, 0.8)}
    assert "best" not in stopped(EarlyStop(rule, grace=10), histories)  # no patience: never
    verdicts = stopped(EarlyStop(rule, grace=10, patience=30), histories)
    assert "best" in verdicts
    assert "patience" not in getattr(verdicts.get("b"), "reason", "")  # b improves every time
    stop = verdicts["best"]
    assert (stop.rule, stop.step, stop.figures["best_step"]) == (rule, 40, 10)
    assert stop.reason == ("its best top-1 0.9000 (loss unknown) at step 10 has not improved in "
                           "the 30 steps to step 40 (patience 30 steps)")  # fmt: skip
    assert "best" not in stopped(EarlyStop(rule, grace=10, patience=31), histories)
    assert "best" not in stopped(EarlyStop(rule, grace=10, patience=0), histories)


def test_patience_counts_from_the_earliest_of_equal_results_and_after_grace() -> None:
    flat = [stopping.Score(s, 0.5, 1.0) for s in (10, 20, 30)]
    assert set(stopped(EarlyStop("asha", grace=10, patience=20), {"a": flat})) == {"a"}
    # A lower loss at the same top-1 is an improvement.
    better = [*flat[:2], stopping.Score(30, 0.5, 0.9)]
    assert stopped(EarlyStop("asha", grace=10, patience=20), {"a": better}) == {}
    # Nothing before the grace period, patience or not.
    assert stopped(EarlyStop("asha", grace=31, patience=5), {"a": flat}) == {}
