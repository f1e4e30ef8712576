"""The launcher's side of early stopping: flags and values into sweep.json and the objects,
a sweep keeping the rule it started with, and `status` showing stopped runs and the lag."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import yaml

from common import layout, storage
from launcher import status
from tests.test_launcher_cli import launcher

CLUSTER = ["--data", "gs://bucket/datasets/d", "--out", "gs://bucket/sweeps/s", "--lrs", "0.1,0.01"]


def record_sweep_args(*flags: str) -> list[list[str]]:
    code, out, err = launcher("sweep", "--backend", "kubernetes", "--dry-run", *CLUSTER, *flags)
    assert code == 0, err
    jobs = [o for o in yaml.safe_load_all(out) if o and o["kind"] == "Job"]
    return [job["spec"]["template"]["spec"]["initContainers"][0]["args"] for job in jobs]


def test_the_rule_goes_to_every_record_sweep_init_container() -> None:
    for args in record_sweep_args("--early-stop", "asha", "--grace", "40", "--steps", "400"):
        at = args.index("--lrs") + 2
        assert args[at:] == [
            "--early-stop",
            "asha",
            "--grace",
            "40",
            "--eta",
            "3",
            "--steps",
            "400",
        ]
    # No rule (the default): the objects are the same as before early stopping existed.
    for args in record_sweep_args():
        assert "--early-stop" not in args and args[-2] == "--lrs"


def test_values_file_gives_the_rule_and_flags_override_it(tmp_path) -> None:  # noqa: ANN001
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"earlyStop": {"rule": "median", "grace": 7}}))
    (args, _) = record_sweep_args("-f", str(values))
    assert args[args.index("--early-stop") :] == ["--early-stop", "median", "--grace", "7",
                                                  "--eta", "3"]  # fmt: skip
    (args, _) = record_sweep_args("-f", str(values), "--early-stop", "asha", "--eta", "2")
    assert args[args.index("--early-stop") :] == ["--early-stop", "asha", "--grace", "7",
                                                  "--eta", "2"]  # fmt: skip
    (args, _) = record_sweep_args("-f", str(values), "--patience", "30")
    assert args[args.index("--early-stop") :] == ["--early-stop", "median", "--grace", "7",
                                                  "--eta", "3", "--patience", "30"]  # fmt: skip


def test_bad_early_stop_input_is_one_sentence(tmp_path) -> None:  # noqa: ANN001
    code, _, err = launcher("sweep", "--dry-run", *CLUSTER, "--grace", "10")
    assert code == 2 and err.strip().splitlines() == [
        "error: --grace, --eta and --patience only apply with --early-stop median or asha."
    ]
    code, _, err = launcher("sweep", "--dry-run", *CLUSTER, "--patience", "30")
    assert code == 2 and "--patience only apply with --early-stop median or asha" in err
    code, _, err = launcher("sweep", "--dry-run", *CLUSTER, "--early-stop", "asha", "--eta", "1")
    assert code == 2 and "--eta: expected a whole number from 2 to 100" in err
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"earlyStop": {"rule": "hyperband"}}))
    for backend in ("local", "kubernetes"):
        code, _, err = launcher(
            "sweep", "--backend", backend, "--dry-run", *CLUSTER, "-f", str(values)
        )
        assert code == 2 and err.strip() == (  # the chart's schema, naming the values file
            f"error: values file {values}: earlyStop.rule: 'hyperband' is not one of "
            "['none', 'median', 'asha']."
        )


def test_record_sweep_writes_the_rule_and_a_sweep_keeps_it(tmp_path) -> None:  # noqa: ANN001
    out = str(tmp_path / "sweep")
    base = ["record-sweep", "--out", out, "--data", str(tmp_path / "d"), "--name", "s"]
    code, _, err = launcher(*base, "--lrs", "0.1", "--early-stop", "asha", "--grace", "40")
    assert code == 0, err
    sweep = layout.SweepDir(out).load()
    assert sweep.early_stop == layout.EarlyStop("asha", 40, 3)
    with open(layout.SweepDir(out).sweep_uri) as f:
        assert json.load(f)["early_stop"] == {"rule": "asha", "grace": 40, "eta": 3,
                                              "patience": None}  # fmt: skip
    # The same again, and another lr with the same rule: fine; another rule: one sentence.
    assert launcher(*base, "--lrs", "0.01", "--early-stop", "asha", "--grace", "40")[0] == 0
    code, _, err = launcher(*base, "--lrs", "0.001")
    assert code == 2
    assert err.strip() == (
        f"error: {layout.SweepDir(out).sweep_uri} already records a sweep with early stopping "
        "asha (grace 40 steps, eta 3), not none; use those, or another sweep directory."
    )
    assert layout.SweepDir(out).load().run_names() == ["lr-0.1", "lr-0.01"]


def test_status_shows_stopped_runs_with_reason_and_step_and_the_lag(tmp_path) -> None:  # noqa: ANN001
    sweep_dir = layout.SweepDir(str(tmp_path / "sweep"))
    names = ("lr-1", "lr-0.1", "lr-0.01")
    sweep_dir.save(layout.Sweep("s", "/d", [layout.Candidate(n, 0.1) for n in names]))
    for name in names:
        sweep_dir.run(name).save_hparams({"lr": 0.1, "steps": 100})
    nan = {"by": "trainer", "rule": "nan", "step": 4, "reason": "the loss is nan at step 4"}
    sweep_dir.run("lr-1").save_complete({"final_step": 0, "stopped": nan})
    sweep_dir.run("lr-0.1").save_stop_request(
        {"rule": "asha", "step": 30, "reason": "top-1 0.2000 at the rung of step 30 ranks 3 of 3"}
    )
    storage.write_json(
        sweep_dir.leaderboard_uri,
        {"runs": [], "lag": {"lr-0.01": {"waiting": 3, "oldest_s": 95.4}}},
    )
    rows = {row.run: row for row in status.bucket_rows(sweep_dir)}
    assert rows["lr-1"].state == "stopped early (nan)" and rows["lr-1"].complete
    assert rows["lr-1"].why == "at step 4: the loss is nan at step 4"
    assert rows["lr-0.1"].state == "stopping (asha)"
    assert rows["lr-0.1"].why.startswith("at step 30: top-1 0.2000 at the rung of step 30")
    assert rows["lr-0.01"].lag == "3 waiting, oldest 95 s"
    code, out, _ = launcher("status", "--sweep", sweep_dir.uri)
    assert code == 0
    header, *lines = out.splitlines()
    assert "eval lag" in header and "why stopped" in header
    assert any("stopped early (nan)" in line and "the loss is nan" in line for line in lines)
    assert os.path.exists(sweep_dir.run("lr-0.1").stop_uri)


def test_status_says_a_run_whose_trainer_died_is_not_running(tmp_path) -> None:  # noqa: ANN001
    """A SIGKILLed trainer leaves a fresh-looking lease behind: its dead pid on this host
    says it is not running (it showed "running" for 2 ttl, 180 s); a live holder still is."""
    sweep_dir = layout.SweepDir(str(tmp_path / "sweep"))
    names = ("lr-0.1", "lr-0.01")
    sweep_dir.save(layout.Sweep("s", "/d", [layout.Candidate(n, 0.1) for n in names]))
    dead = subprocess.Popen(["true"])
    dead.wait()
    for name, pid in zip(names, (dead.pid, os.getpid()), strict=True):
        run = sweep_dir.run(name)
        run.save_hparams({"lr": 0.1, "steps": 100})
        lease = {"role": "trainer", "token": "t", "host": socket.gethostname(), "pid": pid,
                 "since": "", "renewed": time.time(), "ttl_s": 90.0}  # fmt: skip
        storage.write_json(run.lease_uri, lease)
    rows = {row.run: row for row in status.bucket_rows(sweep_dir)}
    assert rows["lr-0.1"].state == "started"  # not running: its trainer is gone
    assert rows["lr-0.01"].state == "running"
