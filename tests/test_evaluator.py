"""The evaluator on runs the trainer really trained: exactly once, restarts, bad checkpoints,
runs that appear later, metrics, leaderboard, best-model export and predictions."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from common import layout, storage
from tests.trainer_testdata import (
    QUICK,
    REPO,
    error_lines,
    free_port,
    run_trainer,
    val_jpegs,
    wait_for,
    write_dataset,
)

STEPS = (10, 20, 30)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> str:
    """One finished run with checkpoints at steps 10, 20 and 30 (copied by each test)."""
    root = tmp_path_factory.mktemp("evaluator")
    data = str(root / "data")
    write_dataset(data, train_per_class=16, val_per_class=5)
    run_dir = str(root / "run")
    done = run_trainer(
        data, run_dir, *QUICK, "--steps", "30", "--checkpoint-every", "10", "--batch-size", "8"
    )
    assert done.returncode == 0, done.stderr
    return run_dir


def make_sweep(tmp_path, trained_run: str, *names: str, complete: bool = True) -> str:
    sweep = tmp_path / "sweep"
    for name in names:
        copy_run(trained_run, str(sweep / "runs" / name), complete=complete)
    return str(sweep)


def copy_run(trained_run: str, dest: str, *, complete: bool = True) -> None:
    """A copy of the trained run; its checkpoint data files are hard links (a real copy costs
    about 0.8 GB of disk a test): a test that damages one first makes it its own (own_file)."""

    def link_or_copy(src: str, dst: str) -> None:
        if ".data-" in os.path.basename(src):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(
        trained_run, dest, ignore=shutil.ignore_patterns("eval"), copy_function=link_or_copy
    )
    if not complete:
        os.unlink(os.path.join(dest, "complete.json"))


def own_file(path: str) -> None:
    """Replace a hard link by a copy of its own, so that damaging it leaves the original alone."""
    shutil.copyfile(path, path + ".own")
    os.replace(path + ".own", path)


def evaluator(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evaluator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def results(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "eval", "results.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def steps_of(run_dir: str) -> list[int]:
    return [entry["step"] for entry in results(run_dir)]


def test_each_checkpoint_is_evaluated_exactly_once_across_restarts(tmp_path, trained_run):
    sweep = make_sweep(tmp_path, trained_run, "lr-0.1")
    run_dir = os.path.join(sweep, "runs", "lr-0.1")

    once = evaluator("--sweep-dir", sweep, "--once")
    assert once.returncode == 0, once.stderr
    assert steps_of(run_dir) == [30]  # --once takes the latest checkpoint

    watch = evaluator("--sweep-dir", sweep, "--interval", "0.5")
    assert watch.returncode == 0, watch.stderr  # exits by itself: the run is complete
    assert sorted(steps_of(run_dir)) == list(STEPS)  # step 30 was not evaluated again

    again = evaluator("--sweep-dir", sweep, "--interval", "0.5")
    assert again.returncode == 0, again.stderr
    assert sorted(steps_of(run_dir)) == list(STEPS)

    for entry in results(run_dir):
        assert entry["examples"] == 15  # the whole validation split, each example once
        assert 0.0 <= entry["top1"] <= 1.0
        assert entry["top5"] is None  # three classes
        assert sum(v["examples"] for v in entry["per_class"].values()) == 15
        with open(entry["confusion"]) as f:
            confusion = json.load(f)
        assert sum(map(sum, confusion["matrix"])) == 15
        assert confusion["labels"] == ["red", "green", "blue"]
    assert os.listdir(os.path.join(run_dir, "eval"))  # TensorBoard events beside the results
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(f"{run_dir}/eval"))
    assert "#1 lr-0.1: top-1" in again.stdout


def test_a_corrupt_checkpoint_is_retried_reported_and_does_not_stop_the_others(
    tmp_path, trained_run
):
    sweep = make_sweep(tmp_path, trained_run, "bad", "good")
    bad = os.path.join(sweep, "runs", "bad")
    data_file = os.path.join(bad, "checkpoints", "ckpt-20.data-00000-of-00001")
    size = os.path.getsize(data_file)
    own_file(data_file)
    with open(data_file, "wb") as f:
        f.write(b"\0" * (size // 2))  # half-written

    watch = evaluator("--sweep-dir", sweep, "--interval", "0.2")
    assert watch.returncode == 0, watch.stderr
    by_step = {entry["step"]: entry for entry in results(bad)}
    assert sorted(by_step) == list(STEPS)
    assert "error" in by_step[20] and "top1" not in by_step[20]
    assert "top1" in by_step[10] and "top1" in by_step[30]
    assert sorted(steps_of(os.path.join(sweep, "runs", "good"))) == list(STEPS)
    assert "bad step 20: checkpoint unreadable (attempt 1 of 3)" in watch.stderr
    assert "bad step 20: giving up" in watch.stderr
    assert "Traceback" not in watch.stderr


def test_watch_picks_up_late_runs_serves_metrics_and_exits_when_all_are_done(tmp_path, trained_run):
    sweep = make_sweep(tmp_path, trained_run, "early", complete=False)
    candidates = [layout.Candidate("early", 0.1), layout.Candidate("late", 0.01)]
    layout.SweepDir(sweep).save(layout.Sweep(name="s", data="unused", candidates=candidates))
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evaluator",
            "--sweep-dir",
            sweep,
            "--interval",
            "0.3",
            "--metrics-port",
            str(port),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        early = os.path.join(sweep, "runs", "early")
        wait_for(lambda: len(results(early)) == 3, 180, "the early run's 3 checkpoints", proc)
        # The result is stored first, then counted: the counter may lag the file for a moment.
        wait_for(
            lambda: scrape(port).get(("finetune_eval_checkpoints_total", "early")) == 3,
            30, "the metrics of the 3rd checkpoint", proc,
        )  # fmt: skip
        metrics = scrape(port)
        last = results(early)[-1]
        assert metrics[("finetune_eval_last_step", "early")] == 30
        assert metrics[("finetune_eval_top1_accuracy", "early")] == pytest.approx(last["top1"])
        assert metrics[("finetune_eval_loss", "early")] == pytest.approx(last["loss"])
        # The best: top-1, then the lower loss, then the earlier step (results.jsonl is by step).
        best = max(results(early), key=lambda e: (e["top1"], -e["loss"]))
        assert metrics[("finetune_eval_best_top1_accuracy", "early")] == pytest.approx(best["top1"])
        assert metrics[("finetune_eval_best_step", "early")] == best["step"]
        assert metrics[("finetune_eval_checkpoints_total", "early")] == 3

        # Neither run is complete and sweep.json promises "late": still watching.
        assert proc.poll() is None
        copy_run(trained_run, os.path.join(sweep, "runs", "late"))
        with open(os.path.join(early, "complete.json"), "w") as f:
            json.dump({"step": 30}, f)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert sorted(steps_of(os.path.join(sweep, "runs", "late"))) == list(STEPS)
    with open(os.path.join(sweep, "leaderboard.json")) as f:
        board = json.load(f)
    assert [row["rank"] for row in board["runs"]] == [1, 2]
    assert {row["run"] for row in board["runs"]} == {"early", "late"}
    tops = [row["best_top1"] for row in board["runs"]]
    assert tops == sorted(tops, reverse=True)
    assert board["best"]["run"] == board["runs"][0]["run"]
    assert board["best"]["step"] == board["runs"][0]["best_step"]
    assert os.path.exists(os.path.join(board["best"]["export"], "saved_model.pb"))
    assert "best checkpoint:" in stdout


def scrape(port: int) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "run" in sample.labels:
                values[(sample.name, sample.labels["run"])] = sample.value
    return values


def test_predict_prints_top_labels_for_any_image_preprocess_accepts(tmp_path, trained_run):
    sweep = make_sweep(tmp_path, trained_run, "only")
    assert evaluator("--sweep-dir", sweep, "--once").returncode == 0
    with open(os.path.join(sweep, "leaderboard.json")) as f:
        export = json.load(f)["best"]["export"]

    (label, jpeg), *_ = val_jpegs(per_class=1)
    png = tmp_path / "photo.jpg"  # a PNG saved as .jpg
    Image.open(io.BytesIO(jpeg)).save(png, "PNG")
    cmyk = tmp_path / "print.JPG"
    Image.open(io.BytesIO(jpeg)).convert("CMYK").save(cmyk, "JPEG")

    done = evaluator("predict", "--model", export, "--top-k", "2", str(png), str(cmyk))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == str(png) and lines[3] == str(cmyk)
    for block in (lines[1:3], lines[4:6]):
        probabilities = [float(line.split("%")[0]) for line in block]
        names = [line.split("%")[1].strip() for line in block]
        assert probabilities == sorted(probabilities, reverse=True)
        assert set(names) <= {"red", "green", "blue"} and len(set(names)) == 2

    junk = tmp_path / "notes.jpg"
    junk.write_text("not a picture")
    bad = evaluator("predict", "--model", export, str(junk))
    assert bad.returncode == 2
    (line,) = error_lines(bad.stderr)
    assert line.startswith(f"error: {junk}: not an image")


def test_bad_arguments_get_one_sentence_and_a_non_zero_exit(tmp_path):
    missing = evaluator("--sweep-dir", str(tmp_path / "nope"), "--once")
    assert missing.returncode == 2
    assert error_lines(missing.stderr) == [f"error: {tmp_path / 'nope'} does not exist."]
    empty = evaluator("--run-dir", str(tmp_path), "--once")
    assert empty.returncode == 2
    assert error_lines(empty.stderr) == [f"error: no run found at {tmp_path} (no hparams.json)."]
    both = evaluator("--sweep-dir", str(tmp_path), "--once", "--interval", "5")
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr


def test_a_sweep_in_a_gcs_bucket(gcs, gcs_bucket, trained_run):
    sweep = f"{gcs_bucket}/sweeps/s1"
    for root, _dirs, files in os.walk(trained_run):
        for name in files:
            local = os.path.join(root, name)
            relative = os.path.relpath(local, trained_run)
            storage.upload_file(local, storage.join(sweep, "runs", "lr-0.01", relative))

    done = subprocess.run(
        [sys.executable, "-m", "evaluator", "--sweep-dir", sweep, "--interval", "0.5"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env={**os.environ, **gcs.env},
    )
    assert done.returncode == 0, done.stderr
    lines = storage.read_text(f"{sweep}/runs/lr-0.01/eval/results.jsonl").splitlines()
    assert sorted(json.loads(line)["step"] for line in lines) == list(STEPS)
    board = storage.read_json(f"{sweep}/leaderboard.json")
    assert board["runs"][0]["run"] == "lr-0.01"
    assert storage.exists(storage.join(board["best"]["export"], "saved_model.pb"))
    assert storage.list_files(f"{sweep}/runs/lr-0.01/eval")  # events written through gs://


def test_timeout_stops_waiting_for_an_unfinished_run_with_exit_code_3(tmp_path, trained_run):
    sweep = make_sweep(tmp_path, trained_run, "stalled", complete=False)
    done = evaluator("--sweep-dir", sweep, "--interval", "0.5", "--timeout", "3")
    assert done.returncode == 3, done.stderr
    assert "no new checkpoint for 3 s; stopping" in done.stderr
    assert sorted(steps_of(os.path.join(sweep, "runs", "stalled"))) == list(STEPS)
    assert "#1 stalled: top-1" in done.stdout  # the verdict so far


# ---------------------------------------------------------------- reliability


def test_a_second_evaluator_on_a_sweep_is_refused_and_a_killed_ones_lease_is_taken(
    tmp_path, trained_run
):
    sweep = make_sweep(tmp_path, trained_run, "lr-0.1", complete=False)
    first = subprocess.Popen(
        [sys.executable, "-m", "evaluator", "--sweep-dir", sweep, "--interval", "0.3"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        run_dir = os.path.join(sweep, "runs", "lr-0.1")
        wait_for(lambda: len(results(run_dir)) == 3, 180, "the first evaluator's scores", first)
        second = evaluator("--sweep-dir", sweep, "--once")
        assert second.returncode == 2, second.stderr
        (line,) = error_lines(second.stderr)
        assert f"another evaluator holds {sweep}/evaluator.lease.json (host " in line
        assert f"pid {first.pid}, since " in line
    finally:
        first.kill()  # SIGKILL: its lease stays behind
        first.wait()
    # The holder is a dead process on this host: no need to wait for the lease to expire.
    third = evaluator("--sweep-dir", sweep, "--once")
    assert third.returncode == 0, third.stderr
    assert sorted(steps_of(run_dir)) == list(STEPS)  # each step once, across all three


def test_an_unreadable_run_is_listed_as_broken_and_the_others_are_ranked(tmp_path, trained_run):
    sweep = make_sweep(tmp_path, trained_run, "good", "bad-json", "torn")
    with open(os.path.join(sweep, "runs", "bad-json", "hparams.json"), "w") as f:
        f.write('{"lr": 0.1, ')  # cut short
    torn = os.path.join(sweep, "runs", "torn", "eval")
    os.makedirs(torn)
    with open(os.path.join(torn, "results.jsonl"), "w") as f:
        f.write('{"step": 10, "top1": 0.5, "loss"')  # a writer killed mid-line
    partial = os.path.join(sweep, "best", "1")  # an export killed half-way
    os.makedirs(os.path.join(partial, "variables"))
    open(os.path.join(partial, "saved_model.pb"), "wb").close()

    done = evaluator("--sweep-dir", sweep, "--interval", "0.3")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    with open(os.path.join(sweep, "leaderboard.json")) as f:
        board = json.load(f)
    assert {row["run"] for row in board["runs"]} == {"good", "torn"}
    ((broken),) = board["broken"]
    assert broken["run"] == "bad-json" and "hparams.json" in broken["reason"]
    assert "not valid JSON" in broken["reason"]
    assert sorted(steps_of(os.path.join(sweep, "runs", "torn"))) == list(STEPS)
    assert not os.path.exists(partial)  # removed by the evaluator that owns best/
    assert "removed the incomplete export" in done.stderr
    assert "broken bad-json:" in done.stdout


def test_once_fails_when_the_latest_checkpoint_is_unreadable(tmp_path, trained_run):
    sweep = make_sweep(tmp_path, trained_run, "bad")
    data_file = os.path.join(sweep, "runs", "bad", "checkpoints", "ckpt-30.data-00000-of-00001")
    own_file(data_file)
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    done = evaluator("--sweep-dir", sweep, "--once")
    assert done.returncode == 2, done.stderr
    assert error_lines(done.stderr)[-1].startswith(
        "error: could not evaluate the latest checkpoint of bad (step 30 is unreadable: "
    )


def test_a_damaged_validation_shard_is_named(tmp_path, trained_run):
    sweep = make_sweep(tmp_path, trained_run, "lr-0.1")
    with open(os.path.join(trained_run, "hparams.json")) as f:
        data = json.load(f)["data"]
    copy = str(tmp_path / "data")
    shutil.copytree(data, copy)
    hparams_path = os.path.join(sweep, "runs", "lr-0.1", "hparams.json")
    with open(hparams_path) as f:
        hparams = json.load(f)
    with open(hparams_path, "w") as f:
        json.dump({**hparams, "data": copy}, f)
    shard = next(p for p in sorted(os.listdir(copy)) if p.startswith("validation-"))
    with open(os.path.join(copy, shard), "r+b") as f:  # same size, flipped bytes mid-file
        f.seek(100)
        f.write(b"\xff" * 64)
    done = evaluator("--sweep-dir", sweep, "--once")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"the shard {os.path.join(copy, shard)} is damaged" in done.stderr


def test_predict_on_a_half_written_export_is_one_sentence(tmp_path, trained_run):
    export = str(tmp_path / "export")
    shutil.copytree(os.path.join(trained_run, "export"), export)
    shutil.rmtree(os.path.join(export, "variables"))
    (_, jpeg), *_ = val_jpegs(per_class=1)
    image = tmp_path / "x.jpg"
    image.write_bytes(jpeg)
    done = evaluator("predict", "--model", export, str(image))
    assert done.returncode == 2
    assert error_lines(done.stderr) == [
        f"error: the export at {export} is incomplete (its writer was stopped mid-way); use "
        "another version, or export again."
    ]
