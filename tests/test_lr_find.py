"""`python -m trainer lr-find`: the range test a person (or the launcher) runs before a sweep.

Bad flags are one sentence and exit 2 before any model is built; the picture is drawn for any
curve; and one real test from real ImageNet weights on real photos (scikit-image's, 75 px,
batch 8, 30 steps) writes a sensible lr_find.json, a PNG, TensorBoard events, and nothing of a
training run.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import subprocess
import sys
import time

import pytest
from PIL import Image

from common import layout, lr_range
from tests.trainer_testdata import REPO, error_lines, one_error, sample_photos, write_dataset
from trainer import lr_find_plot
from trainer.__main__ import main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = str(tmp_path_factory.mktemp("lr-find-cli") / "data")
    write_dataset(uri, train_per_class=2, val_per_class=1)
    return uri


def _fails(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    return one_error(capsys, main, ["lr-find", *argv])


def test_help_lists_the_range_flags_and_the_training_flags(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["lr-find", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m trainer lr-find")
    for flag in (
        "--start-lr", "--end-lr", "--num-steps", "--diverge", "--suggest",
        "--data", "--run-dir", "--batch-size", "--optimizer", "--fine-tune", "--weights",
    ):  # fmt: skip
        assert flag in out


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--start-lr", "0"], "argument --start-lr: expected a number greater than 0, got '0'"),
        (["--end-lr", "inf"], "argument --end-lr: expected a number greater than 0, got 'inf'"),
        (["--start-lr", "1", "--end-lr", "0.1"], "--end-lr 0.1 must be greater than --start-lr 1"),
        (["--num-steps", "5"], "argument --num-steps: expected a whole number from 10 to 10000"),
        (["--num-steps", "many"], "argument --num-steps: expected a whole number, got 'many'"),
        (["--diverge", "1"], "argument --diverge: expected a number greater than 1"),
        (["--suggest", "best"], "argument --suggest: invalid choice: 'best'"),
        (["--workers", "2"], "lr-find runs in one process: drop --workers"),
        (["--worker-index", "1"], "--worker-index 1 needs --workers 2 or more"),
        (["--batch-size", "0"], "argument --batch-size: expected a whole number from 1 to 8192"),
        (["--image-size", "64"], "argument --image-size: expected a whole number from 75 to 1024"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--run-dir", "s3://bucket/run"], "s3:// is not supported; use a local path or gs://"),
        (["--weights", "/nonexistent/backbone.h5"], "/nonexistent/backbone.h5 does not exist"),
    ],
)  # fmt: skip
def test_bad_flags_are_one_sentence_and_exit_2(
    capsys: pytest.CaptureFixture, dataset: str, tmp_path, flags: list[str], says: str
) -> None:  # noqa: ANN001
    line = _fails(capsys, ["--data", dataset, "--run-dir", str(tmp_path / "run"), *flags])
    assert says in line
    assert not os.path.exists(tmp_path / "run")  # nothing written for a refused start


def test_argument_errors_point_at_lr_finds_own_help(capsys: pytest.CaptureFixture) -> None:
    assert "(see python -m trainer lr-find --help)" in _fails(capsys, ["--num-steps", "1"])


def test_a_dataset_that_is_not_there(capsys: pytest.CaptureFixture, tmp_path) -> None:  # noqa: ANN001
    line = _fails(capsys, ["--data", str(tmp_path / "none"), "--run-dir", str(tmp_path / "r")])
    assert f"no dataset.json in {tmp_path / 'none'}" in line


def test_a_training_runs_dir_is_refused(
    capsys: pytest.CaptureFixture, dataset: str, tmp_path
) -> None:  # noqa: ANN001, E501
    run_dir = tmp_path / "runs" / "lr-0.01"
    run_dir.mkdir(parents=True)
    (run_dir / layout.HPARAMS).write_text(json.dumps({"lr": 0.01}))
    line = _fails(capsys, ["--data", dataset, "--run-dir", str(run_dir)])
    assert f"{run_dir} holds a training run" in line
    assert "give it a --run-dir of its own" in line
    assert sorted(os.listdir(run_dir)) == [layout.HPARAMS]


# ---------------------------------------------------------------- the picture


def _curve_record(losses: list[float], num_steps: int) -> lr_range.LrFind:
    recorder = lr_range.Recorder(lr_range.Settings(num_steps=num_steps))
    for loss in losses:
        if recorder.done:
            break
        recorder.add(loss)
    points = recorder.points
    smoothed = [p.smoothed if p.smoothed is not None else math.nan for p in points]
    stopped = recorder.stopped or lr_range.Stopped(lr_range.END, len(points), points[-1].lr, "-")
    return lr_range.LrFind(
        data="d",
        settings=recorder.settings,
        trainer_flags={},
        curve=points,
        stopped=stopped,
        suggestions=lr_range.suggest([p.lr for p in points], smoothed, num_steps),
    )


@pytest.mark.parametrize(
    "losses",
    [
        [2.0 - 0.02 * i for i in range(60)] + [5.0, 50.0, 500.0],  # falls, then explodes
        [1.0, 1.0, math.nan],  # a loss that is not a number after two steps: no suggestion
        [1.0],  # one point
        [0.0] * 100,  # flat at zero: never diverges
    ],
)
def test_the_picture_is_drawn_for_any_curve(losses: list[float]) -> None:
    record = _curve_record(losses, 100)
    image = Image.open(io.BytesIO(lr_find_plot.png(record)))
    assert image.format == "PNG"
    assert image.size == (lr_find_plot.WIDTH, lr_find_plot.HEIGHT)
    colours = {c for _, c in image.convert("RGB").getcolors(1 << 20)}
    assert lr_find_plot.COLOURS[lr_range.VALLEY] in colours or not record.suggestions


# ---------------------------------------------------------------- a real range test

FLAGS = ["--image-size", "75", "--batch-size", "8", "--num-steps", "30"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> str:
    return sample_photos(str(tmp_path_factory.mktemp("lr-find-photos")))


@dataclasses.dataclass
class Found:
    run_dir: str
    stderr: str
    seconds: float
    record: lr_range.LrFind


@pytest.fixture(scope="module")
def found(photos: str, imagenet_weights: str, tmp_path_factory: pytest.TempPathFactory) -> Found:
    pytest.importorskip("tensorflow")
    run_dir = str(tmp_path_factory.mktemp("lr-find") / "lr-find")
    command = [sys.executable, "-m", "trainer", "lr-find", "--data", photos, "--run-dir",
               run_dir, "--weights", imagenet_weights, *FLAGS]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    return Found(run_dir, done.stderr, seconds, lr_range.LrFind.load(run_dir))


def test_the_curve_rises_in_lr_from_start_lr_and_stops_for_a_reason(found: Found) -> None:
    record = found.record
    lrs = record.lrs
    assert lrs[0] == pytest.approx(lr_range.START_LR)
    assert lrs == pytest.approx(lr_range.geometric_lrs(1e-7, 10.0, 30)[: len(lrs)])
    assert [p.step for p in record.curve] == list(range(1, len(lrs) + 1))
    stop = record.stopped
    assert stop.step == len(record.curve) and stop.lr == lrs[-1]
    # Each step's own loss, smoothed as fastai does: the file is the maths applied to itself.
    raw = [p.loss if p.loss is not None else math.nan for p in record.curve]
    finite = [s for s in lr_range.smooth(raw) if math.isfinite(s)]
    assert [s for s in record.smoothed if s is not None] == pytest.approx(finite)
    if stop.reason == lr_range.DIVERGED:  # what it did here, from lr 2.8 on (at 30 steps)
        assert finite[-1] > 4 * min(finite)
    elif stop.reason == lr_range.END:
        assert len(lrs) == 30 and lrs[-1] == pytest.approx(10.0)
    # Full fine-tuning at lr 1 and beyond undoes ImageNet's features: the loss must have risen.
    assert record.curve[-1].loss is None or record.curve[-1].loss > 2 * min(finite)


def test_the_suggestions_lie_inside_the_range_tested(found: Found) -> None:
    record = found.record
    lrs = record.lrs
    assert set(record.suggestions) == set(lr_range.SUGGESTION_METHODS)
    assert record.suggested == lr_range.VALLEY
    valley = record.suggestions[lr_range.VALLEY]
    assert record.lr == valley.lr == lrs[valley.index]
    lo, hi = lr_range.window(len(lrs), 30)
    for found_lr in record.suggestions.values():
        assert lo <= found_lr.index < hi  # read inside fastai's window, not its ends
        assert lrs[0] / 10 <= found_lr.lr <= record.stopped.lr
    # The minimum/10 suggestion is a tenth of the lowest smoothed loss's lr in that window.
    window = [s for s in record.smoothed[lo:hi] if s is not None]
    minimum = record.suggestions[lr_range.MINIMUM]
    assert record.curve[minimum.index].smoothed == min(window)
    assert minimum.lr == pytest.approx(lrs[minimum.index] / 10)


def test_the_file_records_the_training_flags_it_describes(
    found: Found, imagenet_weights: str
) -> None:  # noqa: E501
    record = found.record
    flags = record.trainer_flags
    assert flags["image_size"] == 75 and flags["batch_size"] == 8
    assert flags["fine_tune"] == "all" and flags["optimizer"] == "rmsprop"
    assert flags["head_init"] == "fit"  # pretrained weights: the head is fitted first, as a run
    assert flags["weights"] == imagenet_weights
    assert flags["num_classes"] == 6
    assert record.settings == lr_range.Settings(num_steps=30)
    assert 0 < record.steps_seconds < record.seconds <= found.seconds


def test_it_says_what_it_found_in_one_line(found: Found) -> None:
    lines = error_lines(found.stderr)
    assert any("head fitted to the frozen backbone's features" in line for line in lines)
    [summary] = [line for line in lines if "lr-find: " in line and "suggestions:" in line]
    record = found.record
    assert f"lr-find: {len(record.curve)} steps in " in summary
    assert f"suggested lr {record.lr:.3g} (valley)" in summary
    assert "Traceback" not in found.stderr


def test_the_plot_is_a_png_and_tensorboard_has_the_curve(found: Found) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    with open(os.path.join(found.run_dir, lr_range.PLOT), "rb") as f:
        png = f.read()
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (lr_find_plot.WIDTH, lr_find_plot.HEIGHT)

    events = EventAccumulator(os.path.join(found.run_dir, lr_range.EVENTS),
                              size_guidance={"tensors": 0})  # fmt: skip
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert {"lr_find/loss", "lr_find/smoothed_loss", "lr_find/learning_rate"} <= tags
    record = found.record
    smoothed = events.Tensors("lr_find/smoothed_loss")
    assert [e.step for e in smoothed] == [p.step for p in record.curve if p.smoothed is not None]
    values = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in smoothed]
    assert values == pytest.approx([s for s in record.smoothed if s is not None], rel=1e-5)
    [plot] = events.Tensors("lr_find/plot")
    width, height, encoded = plot.tensor_proto.string_val
    assert (int(width), int(height)) == image.size
    assert Image.open(io.BytesIO(encoded)).size == image.size


def test_nothing_of_a_training_run_is_written(found: Found) -> None:
    # The weights are thrown away: no checkpoint, export, completion or hyperparameters, so
    # neither the evaluator nor a trainer ever takes this directory for a run.
    assert sorted(os.listdir(found.run_dir)) == sorted(
        [lr_range.FILE, lr_range.PLOT, lr_range.EVENTS]
    )
    assert not layout.RunDir(found.run_dir).has_hparams()
