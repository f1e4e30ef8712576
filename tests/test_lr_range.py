"""The range test's maths and file (common/lr_range.py) on hand-made curves with known answers.

No TensorFlow: the launcher reads lr_find.json through this module, and every number the
trainer's lr-find reports comes from these functions.
"""

from __future__ import annotations

import json
import math

import pytest

from common import lr_range, storage
from common.cli import UserError
from common.lr_range import Recorder, Settings

# ---------------------------------------------------------------- the lr ramp


def test_the_lr_rises_geometrically_from_start_to_end() -> None:
    lrs = lr_range.geometric_lrs(1e-7, 10.0, 100)
    assert len(lrs) == 100
    assert lrs[0] == 1e-7
    assert lrs[-1] == pytest.approx(10.0, rel=1e-12)
    ratios = {round(b / a, 12) for a, b in zip(lrs, lrs[1:], strict=False)}
    assert len(ratios) == 1  # one constant factor: 10**(8/99)
    assert ratios.pop() == pytest.approx(10 ** (8 / 99), rel=1e-12)


# ---------------------------------------------------------------- smoothing


def test_the_moving_average_is_bias_corrected_exactly() -> None:
    # beta 0.5 on 1, 0, 0: averages 0.5, 0.25, 0.125 over 1 - 0.5**n = 0.5, 0.75, 0.875.
    assert lr_range.smooth([1.0, 0.0, 0.0], beta=0.5) == pytest.approx([1.0, 1 / 3, 1 / 7])
    # fastai's beta: the first value is the first loss, not 2% of it.
    first, second = lr_range.smooth([2.0, 4.0])
    assert first == pytest.approx(2.0, rel=1e-12)
    assert second == pytest.approx((0.98 * 0.02 * 2 + 0.02 * 4) / (1 - 0.98**2), rel=1e-12)


def test_a_constant_loss_stays_constant_once_corrected() -> None:
    assert lr_range.smooth([3.0] * 50) == pytest.approx([3.0] * 50, rel=1e-12)


def test_a_loss_that_is_not_a_number_poisons_the_average() -> None:
    assert math.isnan(lr_range.smooth([1.0, math.nan, 1.0])[-1])


# ---------------------------------------------------------------- stopping


@pytest.mark.parametrize(
    ("smoothed", "best", "reason"),
    [
        (4.01, 1.0, lr_range.DIVERGED),
        (4.0, 1.0, None),  # "passes": at exactly 4x it goes on
        (1.0, 1.0, None),
        (math.nan, 1.0, lr_range.NOT_FINITE),
        (math.inf, 1.0, lr_range.NOT_FINITE),
    ],
)
def test_the_stop_test(smoothed: float, best: float, reason: str | None) -> None:
    assert lr_range.stop_reason(smoothed, best, 4.0) == reason


def _run(settings: Settings, loss_of) -> Recorder:  # noqa: ANN001
    """Drive a Recorder as the trainer does, with loss_of(lr) in place of a training step."""
    recorder = Recorder(settings)
    while not recorder.done:
        recorder.add(loss_of(recorder.next_lr()))
    return recorder


def test_a_diverging_curve_stops_the_first_time_it_passes_4x_its_minimum() -> None:
    settings = Settings(start_lr=1e-6, end_lr=10.0, num_steps=100)
    # Falls from 2 to 0.5 up to lr 1e-3, then explodes.
    recorder = _run(settings, lambda lr: 2.0 - 1.5 * min(1.0, lr / 1e-3) + (lr / 1e-2) ** 2)
    smoothed = lr_range.smooth([p.loss for p in recorder.points])
    expected = next(
        i for i in range(100) if smoothed[i] > 4 * min(smoothed[: i + 1])
    )  # the first step past 4x
    stop = recorder.stopped
    assert stop.reason == lr_range.DIVERGED
    assert stop.step == expected + 1 == len(recorder.points) < 100
    assert stop.lr == lr_range.lr_at(expected, 1e-6, 10.0, 100)
    assert [p.smoothed for p in recorder.points] == pytest.approx(smoothed)
    assert "passed 4x its minimum" in stop.why


def test_a_loss_that_is_not_a_number_stops_at_once_and_is_recorded_as_null() -> None:
    losses = iter([1.0, 0.9, math.nan, 0.5])
    recorder = _run(Settings(num_steps=10), lambda lr: next(losses))
    assert recorder.stopped.reason == lr_range.NOT_FINITE
    assert recorder.stopped.step == 3
    assert recorder.points[-1].loss is None and recorder.points[-1].smoothed is None


def test_a_curve_that_never_diverges_runs_every_step_to_end_lr() -> None:
    recorder = _run(Settings(start_lr=1e-5, end_lr=1.0, num_steps=20), lambda lr: 1.0)
    assert recorder.stopped.reason == lr_range.END
    assert len(recorder.points) == 20
    assert recorder.points[-1].lr == pytest.approx(1.0)
    with pytest.raises(RuntimeError):
        recorder.add(1.0)


# ---------------------------------------------------------------- suggestions


def test_valley_is_the_middle_of_the_longest_falling_stretch() -> None:
    # Noise, then a fall from index 1 (3.2) to index 10 (0.45), then divergence.
    losses = [3.0, 3.2, 3.1, 2.5, 2.0, 1.5, 1.0, 0.8, 0.6, 0.5, 0.45, 0.9, 2.0, 5.0]
    lrs = lr_range.geometric_lrs(1e-6, 1.0, len(losses))
    found = lr_range.valley(lrs, losses)
    assert found.index == 5  # halfway between 1 and 10
    assert found.lr == lrs[5]


def test_one_step_up_does_not_cut_a_falling_stretch() -> None:
    # 4, 3, (3.5), 2, 1: the longest decreasing subsequence spans indices 0 to 4.
    losses = [4.0, 3.0, 3.5, 2.0, 1.0, 2.0, 3.0]
    found = lr_range.valley(lr_range.geometric_lrs(1e-4, 1.0, 7), losses)
    assert found.index == 2


def test_a_stretch_at_the_very_start_is_not_read_as_the_last_point() -> None:
    # fastai's index is one before the stretch: -1 here, which picked the last lr.
    found = lr_range.valley([1e-3, 1e-2, 1e-1], [2.0, 1.0, 3.0])
    assert found.index == 0


def test_steep_is_the_fastest_fall_per_unit_of_log_lr() -> None:
    lrs = lr_range.geometric_lrs(1e-5, 1e-1, 5)
    assert lr_range.steep(lrs, [1.0, 0.9, 0.5, 0.4, 0.45]) == (lrs[1], 1)
    # Uneven spacing: -0.3 over a factor 2 is steeper than -0.5 over a factor 10.
    assert lr_range.steep([1e-3, 1e-2, 2e-2], [1.0, 0.5, 0.2]).index == 1


def test_minimum_is_a_tenth_of_the_lowest_losss_lr() -> None:
    lrs = [1e-4, 1e-3, 1e-2, 1e-1]
    found = lr_range.minimum(lrs, [3.0, 2.0, 1.0, 2.0])
    assert found.index == 2
    assert found.lr == pytest.approx(1e-3)


def test_suggestions_leave_out_the_warm_up_and_the_divergence() -> None:
    num_steps = 40
    lrs = lr_range.geometric_lrs(1e-6, 1.0, num_steps)
    # A V with its bottom at index 20; lower values at index 0 (the first tenth) and 39 (the
    # last 5) are outside fastai's window [4, 35), so the minimum is read at 20.
    smoothed = [2.0 + 0.01 * abs(i - 20) for i in range(num_steps)]
    smoothed[0], smoothed[39] = 0.1, 0.05
    found = lr_range.suggest(lrs, smoothed, num_steps)
    assert set(found) == set(lr_range.SUGGESTION_METHODS)
    assert found[lr_range.MINIMUM] == (lrs[20] / 10, 20)
    assert all(4 <= s.index < 35 for s in found.values())


def test_suggestions_stop_at_the_first_loss_that_is_not_a_number() -> None:
    lrs = lr_range.geometric_lrs(1e-6, 1.0, 30)
    smoothed = [3.0 - 0.1 * i for i in range(30)]
    smoothed[15] = math.nan
    found = lr_range.suggest(lrs, smoothed, 30)
    assert found[lr_range.MINIMUM].index == 14  # the lowest before the NaN


def test_no_suggestion_from_a_curve_too_short_to_read() -> None:
    assert lr_range.steps_needed(100) == 18
    lrs = lr_range.geometric_lrs(1e-6, 1.0, 100)[:17]
    assert lr_range.suggest(lrs, [1.0] * 17, 100) == {}
    assert lr_range.suggest(lrs + [2e-3], [1.0] * 18, 100) != {}


# ---------------------------------------------------------------- the file


def _record() -> lr_range.LrFind:
    recorder = _run(Settings(num_steps=20), lambda lr: 1.0 if lr < 1e-2 else math.inf)
    points = recorder.points
    smoothed = [p.smoothed if p.smoothed is not None else math.nan for p in points]
    return lr_range.LrFind(
        data="/data",
        settings=recorder.settings,
        trainer_flags={"batch_size": 8, "optimizer": "rmsprop"},
        curve=points,
        stopped=recorder.stopped,
        suggestions=lr_range.suggest([p.lr for p in points], smoothed, 20),
        seconds=12.5,
        created="2026-01-01T00:00:00+00:00",
    )


def test_the_file_round_trips_locally_and_on_gcs(bucket_root: str) -> None:
    record = _record()
    assert record.stopped.reason == lr_range.NOT_FINITE and record.lr is not None
    run_dir = storage.join(bucket_root, "lr-find")
    record.save(run_dir)
    raw = storage.read_json(storage.join(run_dir, lr_range.FILE))  # strict JSON: no NaN
    assert raw["lr"] == record.lr and raw["suggested"] == "valley"
    assert raw["curve"][-1]["loss"] is None
    json.dumps(raw, allow_nan=False)
    loaded = lr_range.LrFind.load(run_dir)
    assert loaded == record


def _saved(tmp_path, change) -> str:  # noqa: ANN001
    data = _record().to_dict()
    change(data)
    (tmp_path / lr_range.FILE).write_text(json.dumps(data))
    return str(tmp_path)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d.update(curve="x"), "'curve' is a string, not a list"),
        (lambda d: d["curve"][0].update(lr="fast"), "curve point 1: 'lr' is a string"),
        (lambda d: d["curve"][0].update(lr=-1), "curve point 1's lr is -1, not a finite number"),
        (lambda d: d.update(curve=[]), "its curve is empty"),
        (lambda d: d["suggestions"].update(best={"lr": 1, "step": 1}), "'best' is not a sugg"),
        (lambda d: d["suggestions"]["valley"].update(step=999), "names step 999, not in the"),
        (lambda d: d.update(suggested="max"), "'suggested' is 'max', not one of valley"),
        (lambda d: d["stopped"].update(reason="tired"), "reason 'tired', not one of diverged"),
        (lambda d: d.update(format="something-else/1"), "its format is 'something-else/1'"),
        (lambda d: d.pop("stopped"), "'stopped' is missing"),
    ],
)  # fmt: skip
def test_a_file_of_another_shape_is_one_sentence_naming_it(tmp_path, change, says) -> None:  # noqa: ANN001
    run_dir = _saved(tmp_path, change)
    with pytest.raises(UserError) as raised:
        lr_range.LrFind.load(run_dir)
    message = str(raised.value)
    assert says in message
    assert message.startswith(f"{tmp_path / lr_range.FILE} (learning-rate range test)")
    assert "\n" not in message


def test_a_missing_or_unreadable_file_is_one_sentence(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(UserError, match="lr_find.json does not exist: run `python -m trainer"):
        lr_range.LrFind.load(str(tmp_path))
    (tmp_path / lr_range.FILE).write_text("{not json")
    with pytest.raises(UserError, match="is not valid JSON"):
        lr_range.LrFind.load(str(tmp_path))
    (tmp_path / lr_range.FILE).write_text("[1, 2]")
    with pytest.raises(UserError, match="its top level is a list, not an object"):
        lr_range.LrFind.load(str(tmp_path))
