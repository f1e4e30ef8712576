"""What a shared bucket may hold is input, not trust: names and JSON shapes are checked.

A name read from sweep.json, the leaderboard or a listing becomes a path (runs/<run>/, the
local backend's logs/<run>.log) and an object name only once it is one safe path segment;
a JSON file of the wrong shape is one sentence naming it, not a traceback in `status`,
`refine` or the trainer.
"""

from __future__ import annotations

import json
import os

import pytest

from common import layout
from common.cli import UserError
from tests.test_launcher_cli import launcher
from tests.trainer_testdata import write_dataset

GOOD_SWEEP = {
    "name": "s",
    "data": "/data",
    "candidates": [{"run": "lr-0.1", "lr": 0.1}],
    "trainer_args": [],
    "format": layout.SWEEP_FORMAT,
}


def write_json(path: str, data: object) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


# ---------------------------------------------------------------- names (issue 17, case 9)


@pytest.mark.parametrize("run", ["../../outside", "..", "a/b", "", "lr 0.1", "a\nb", 7])
def test_a_run_name_in_sweep_json_that_is_not_a_path_segment_is_refused(tmp_path, run) -> None:  # noqa: ANN001
    sweep_dir = layout.SweepDir.at(str(tmp_path / "sweep"))
    write_json(sweep_dir.sweep_uri, {**GOOD_SWEEP, "candidates": [{"run": run, "lr": 0.1}]})
    with pytest.raises(UserError) as caught:
        sweep_dir.load()
    message = str(caught.value)
    assert sweep_dir.sweep_uri in message and "not a valid name" in message
    assert "\n" not in message


def test_run_paths_are_made_from_valid_names_only(tmp_path) -> None:  # noqa: ANN001
    sweep_dir = layout.SweepDir.at(str(tmp_path / "sweep"))
    with pytest.raises(UserError, match="not a valid name"):
        sweep_dir.run("../escape")
    for name in ("lr-0.01", "odd name"):
        write_json(os.path.join(sweep_dir.runs_dir, name, layout.HPARAMS), {"lr": 0.01})
    assert [run.name for run in sweep_dir.runs()] == ["lr-0.01"]


def test_the_sweep_name_in_sweep_json_is_checked(tmp_path) -> None:  # noqa: ANN001
    sweep_dir = layout.SweepDir.at(str(tmp_path / "sweep"))
    write_json(sweep_dir.sweep_uri, {**GOOD_SWEEP, "name": "../../elsewhere"})
    with pytest.raises(UserError, match="sweep name '../../elsewhere' is not a valid name"):
        sweep_dir.load()


def test_status_refuses_a_sweep_json_that_names_a_run_outside(tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "sweep"
    write_json(str(out / layout.SWEEP), {**GOOD_SWEEP, "candidates": [{"run": "../x", "lr": 1}]})
    code, _, stderr = launcher("status", "--sweep", str(out))
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert "sweep.json" in stderr and "'../x' is not a valid name" in stderr


# ---------------------------------------------------------------- shapes (issue 17, case 14)


def _sweep(tmp_path, **files: object) -> str:  # noqa: ANN001
    """A sweep dir with a good sweep.json and run lr-0.1, then `files` written over it."""
    out = str(tmp_path / "sweep")
    write_json(os.path.join(out, layout.SWEEP), GOOD_SWEEP)
    write_json(os.path.join(out, "runs", "lr-0.1", layout.HPARAMS), {"lr": 0.1, "steps": 10})
    for relpath, data in files.items():
        write_json(os.path.join(out, *relpath.split("__")), data)
    return out


ROW = {"run": "lr-0.1", "rank": 1, "best_top1": 0.5, "best_step": 10, "best_loss": 1.0}
BAD_FILES = {
    "sweep.json a list": ({"sweep.json": [GOOD_SWEEP]}, "sweep.json"),
    "sweep.json lr a string": (
        {"sweep.json": {**GOOD_SWEEP, "candidates": [{"run": "lr-0.1", "lr": "0.1"}]}},
        "sweep.json",
    ),
    "sweep.json trainer_args a string": (
        {"sweep.json": {**GOOD_SWEEP, "trainer_args": "--steps 5"}},
        "sweep.json",
    ),
    "leaderboard a list": ({"leaderboard.json": [ROW]}, "leaderboard.json"),
    "leaderboard rank a string": (
        {"leaderboard.json": {"runs": [{**ROW, "rank": "1"}]}},
        "leaderboard.json",
    ),
    "leaderboard best_top1 a string": (
        {"leaderboard.json": {"runs": [{**ROW, "best_top1": "high"}]}},
        "leaderboard.json",
    ),
    "complete.json a list": ({"runs__lr-0.1__complete.json": [1]}, "complete.json"),
    "complete.json stopped a string": (
        {"runs__lr-0.1__complete.json": {"final_step": 3, "stopped": "yes"}},
        "complete.json",
    ),
}


@pytest.mark.parametrize("command", ["status", "refine"])
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_wrong_shaped_json_file_is_one_sentence_naming_it(tmp_path, command, case) -> None:  # noqa: ANN001
    files, name = BAD_FILES[case]
    if command == "refine" and name == "complete.json":
        files = {**files, "leaderboard.json": {"runs": [ROW]}}  # refine reads no complete.json
    out = _sweep(tmp_path, **files)
    code, _, stderr = launcher(command, "--sweep", out)
    if command == "refine" and name == "complete.json":
        assert code == 0, stderr
        return
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    assert name in stderr


def test_status_shows_a_run_with_wrong_shaped_hparams_as_broken(tmp_path) -> None:  # noqa: ANN001
    out = _sweep(tmp_path, **{"runs__lr-0.1__hparams.json": ["lr", 0.1]})
    code, stdout, stderr = launcher("status", "--sweep", out)
    assert code == 0, stderr
    assert "broken" in stdout


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("bucket-input") / "colours")
    write_dataset(path, train_per_class=2, val_per_class=1, train_shards=1, size=32)
    return path


@pytest.mark.parametrize(
    "hparams",
    [[{"lr": 0.1}], {"lr": "fast"}, {"batch_size": "32"}, {"labels": "red"}, {"optimizer": 5},
     {"label_smoothing": "0.1"}, {"dropout": "0.2"}, {"fine_tune": None, "momentum": True}],
)  # fmt: skip
def test_the_trainer_refuses_wrong_shaped_hparams_in_one_sentence(
    tmp_path,
    dataset,
    hparams,
    capsys,  # noqa: ANN001
) -> None:
    from common.cli import run_main
    from trainer.__main__ import main

    run_dir = tmp_path / "run"
    write_json(str(run_dir / layout.HPARAMS), hparams)
    try:
        code = run_main(main, ["--data", dataset, "--run-dir", str(run_dir), "--steps", "1"])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "hparams.json" in lines[0], err


def test_the_printed_leaderboard_follows_the_evaluators_ranking(tmp_path, capsys) -> None:  # noqa: ANN001
    """A top-1 tie is the evaluator's to break (the lower loss): the row marked best is the
    first printed, whatever the names; unscored runs come last."""
    from launcher.local import print_leaderboard

    candidates = [{"run": f"lr-{lr}", "lr": lr} for lr in (0.1, 0.01, 0.001)]
    tie = {"best_top1": 0.75, "best_step": 10}
    out = _sweep(tmp_path, **{
        "sweep.json": {**GOOD_SWEEP, "candidates": candidates},
        "leaderboard.json": {"runs": [{**tie, "run": "lr-0.1", "rank": 1, "best_loss": 0.4},
                                      {**tie, "run": "lr-0.01", "rank": 2, "best_loss": 0.9}]},
    })  # fmt: skip
    print_leaderboard(layout.SweepDir(out))
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [row.split()[0] for row in rows] == ["*", "lr-0.01", "lr-0.001"]
    assert rows[0].split()[1] == "lr-0.1"
