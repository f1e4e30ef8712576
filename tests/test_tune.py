"""`launcher tune`: the range test, decades around its suggestion, refine rounds, in stages
recorded in sweep.json. The grid and budget arithmetic as pure functions; stages recorded
through the same compare-and-swap as candidates; one real tune on the local backend (real
trainers, a real range test and evaluator: 75-pixel images, random weights, 6-step runs),
then the same command again, which redoes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from common import layout, lr_range
from launcher import record, tune
from launcher.spec import SweepSpec
from tests.trainer_testdata import REPO, write_dataset


def test_the_coarse_grid_is_the_suggestions_decade_and_one_each_side() -> None:
    assert tune.coarse_grid(0.0012, None) == [0.01, 0.001, 0.0001]
    assert tune.coarse_grid(0.0068, None) == [0.07, 0.007, 0.0007]


def test_the_coarse_grid_leaves_out_lrs_where_the_range_test_diverged() -> None:
    assert tune.coarse_grid(0.0012, ceiling=0.005) == [0.001, 0.0001]
    # A ceiling at or below the suggestion still leaves the suggestion's own decade.
    assert tune.coarse_grid(0.003, ceiling=0.001) == [0.003, 0.0003]


def test_tune_stops_a_run_whose_best_is_three_grace_periods_old_unless_told() -> None:
    def patience(rule: layout.EarlyStop, *flags: str) -> int | None:
        spec = SweepSpec("s", "/d", "/o", (), flags, rule)
        return tune.with_patience(spec).early_stop.patience

    asha = layout.EarlyStop("asha")
    assert patience(asha, "--steps", "120") == 36  # grace: a tenth of the steps
    assert patience(layout.EarlyStop("median", grace=40), "--steps", "120") == 120
    assert patience(layout.EarlyStop("asha", patience=0), "--steps", "120") == 0  # never
    assert patience(layout.EarlyStop("asha", patience=50), "--steps", "120") == 50
    assert patience(asha, "--epochs", "3") is None  # the runs' length is not known yet
    assert patience(layout.EarlyStop("none"), "--steps", "120") is None


def test_a_refine_round_must_beat_the_noise_of_a_small_validation_split(tmp_path) -> None:  # noqa: ANN001
    """One photo more of 57 is no finding: a round must add one standard error of the best's
    top-1 there (0.057 at 0.75); on 10,000 images the threshold (0.01) is the larger."""
    assert tune.noise_of(0.75, 57) == pytest.approx(0.0574, abs=1e-4)
    assert tune.noise_of(1.0, 57) == 0.0
    data = str(tmp_path / "data")
    write_dataset(data, train_per_class=2, val_per_class=19)  # 3 classes: 57 validation images
    tuner = tune.Tuner(SweepSpec("s", data, str(tmp_path / "o"), (), ()), None, tune.Options())
    needed, why = tuner.needed_gain({"top1": 0.75})
    assert needed == pytest.approx(0.0574, abs=1e-4)
    assert why == ("the noise of a top-1 of 0.7500 on 57 validation images (0.0574, one "
                   "standard error)")  # fmt: skip
    assert tuner.needed_gain({"top1": 1.0}) == (0.01, "the threshold 0.01")
    assert tuner.needed_gain(None) == (0.01, "the threshold 0.01")
    # No readable dataset.json (moved away meanwhile): the threshold alone, no failure.
    gone = tune.Tuner(SweepSpec("s", str(tmp_path / "gone"), str(tmp_path / "o"), (), ()), None,
                      tune.Options())  # fmt: skip
    assert gone.needed_gain({"top1": 0.75}) == (0.01, "the threshold 0.01")


def test_a_budget_keeps_the_lrs_nearest_the_middle() -> None:
    lrs = [0.1, 0.01, 0.001, 0.0001, 1e-05]
    assert tune._nearest_first(lrs, 3) == [0.01, 0.001, 0.0001]
    assert tune._nearest_first(lrs, 1) == [0.001]
    assert tune._nearest_first(lrs, 9) == lrs


def test_stages_are_recorded_in_sweep_json_beside_the_candidates(tmp_path) -> None:  # noqa: ANN001
    out = str(tmp_path / "sweep")
    record.record(SweepSpec("s", str(tmp_path / "data"), out, (0.1,), ()))
    sweep_dir = layout.SweepDir(out)
    record.record_stage(sweep_dir, layout.Stage("lr-find", "range test", started="t0"))
    record.record_stage(sweep_dir, layout.Stage("coarse", "decades", [0.1], ["lr-0.1"]))
    done = layout.Stage("lr-find", "range test: valley 0.001", [0.001], finished="t1")
    record.record_stage(sweep_dir, done)  # replaces its namesake, in its place
    sweep = sweep_dir.load()
    assert [s.name for s in sweep.stages] == ["lr-find", "coarse"]
    assert sweep.stages[0].finished == "t1" and sweep.stages[0].lrs == [0.001]
    assert sweep.run_names() == ["lr-0.1"]  # candidates untouched
    with open(sweep_dir.sweep_uri) as f:
        assert json.load(f)["stages"][1]["runs"] == ["lr-0.1"]


def test_a_stage_without_a_name_is_one_sentence(tmp_path) -> None:  # noqa: ANN001
    sweep_dir = layout.SweepDir(str(tmp_path))
    with open(sweep_dir.sweep_uri, "w") as f:
        json.dump({"name": "s", "data": "d", "candidates": [], "stages": [{"why": "?"}]}, f)
    with pytest.raises(Exception, match="is not a valid sweep description .a stage: "):
        sweep_dir.load()


# ------------------------------------------------------------ a real tune

FLAGS = ["--steps", "6", "--batch-size", "4", "--image-size", "75", "--weights", "none",
         "--fine-tune", "head", "--checkpoint-every", "2"]  # fmt: skip


def tune_command(data: str, out: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "launcher", "tune", "--data", data, "--out", out,
            "--parallel", "3", "--max-rounds", "1", "--threshold", "0", *FLAGS,
            *extra]  # fmt: skip


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=900)


def test_tune_runs_the_range_test_then_a_coarse_grid_then_a_refine_round(tmp_path) -> None:  # noqa: ANN001
    pytest.importorskip("tensorflow")
    data, out = str(tmp_path / "data"), str(tmp_path / "sweep")
    write_dataset(data, train_per_class=8, val_per_class=2)
    budget = 100 + 3 * 6 + 2 * 6  # the range test, three coarse runs, two refined
    done = run(tune_command(data, out, "--budget-steps", str(budget)))
    assert done.returncode == 0, done.stderr[-3000:]
    sweep_dir = layout.SweepDir(out)
    sweep = sweep_dir.load()
    found = lr_range.LrFind.load(os.path.join(out, layout.LR_FIND_DIR))
    stages = {s.name: s for s in sweep.stages}
    assert list(stages) == ["lr-find", "coarse", "refine-1"]
    assert stages["lr-find"].lrs == [found.lr] and "valley" in stages["lr-find"].why
    assert stages["coarse"].lrs == tune.coarse_grid(found.lr, _ceiling(found))
    assert stages["coarse"].best["top1"] is not None
    # The budget pays for the steps left once the coarse runs (some stopped early) are done.
    assert 1 <= len(stages["refine-1"].lrs) <= 5
    assert stages["refine-1"].ended  # why tuning ended, on the last stage
    names = [*stages["coarse"].runs, *stages["refine-1"].runs]
    assert sweep.run_names() == names
    for name in names:  # every stage's runs trained to the end or stopped by the rule
        assert sweep_dir.run(name).is_complete()
    board = sweep_dir.leaderboard()
    assert {row["run"] for row in board["runs"]} == set(names)  # one board across the stages
    assert os.listdir(os.path.join(out, "best"))
    assert f"tune: best {board['runs'][0]['run']}" in done.stderr

    status = run([sys.executable, "-m", "launcher", "status", "--sweep", out])
    assert status.returncode == 0, status.stderr
    assert "stage lr-find (done)" in status.stdout and "stage refine-1 (done)" in status.stdout
    assert "tuning ended: " in status.stdout

    again = run(tune_command(data, out, "--budget-steps", str(budget)))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "tune: already done (" in again.stderr and "tune: lr-find:" not in again.stderr
    assert sweep_dir.load().run_names() == names


def _ceiling(found: lr_range.LrFind) -> float | None:
    return found.stopped.lr if found.stopped.reason != lr_range.END else None


def test_tune_on_kubernetes_refuses_local_paths_before_anything_is_written(tmp_path) -> None:  # noqa: ANN001
    """The tuner runs in the cluster (tests/test_tune_cluster.py), where a laptop's folders do
    not exist: one sentence, and neither the sweep dir nor a cluster is touched."""
    data, out = str(tmp_path / "data"), str(tmp_path / "sweep")
    done = run([*tune_command(data, out), "--backend", "kubernetes"])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"--data {data} is a local path, which pods cannot see" in done.stderr
    assert not os.path.exists(out)
