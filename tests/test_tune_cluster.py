"""`launcher tune --backend kubernetes`: the tuner Job from a laptop, and the tuner in its pod.

Against kmock's Kubernetes API emulator and the GCS emulator, as tests/test_launcher_kube.py
(no TensorFlow: nothing trains). The laptop's command must create exactly the tuner Job, once.
Then that Job's own command line and env run here, as its pod would run them, while the test
plays the rest of the cluster between the tuner's polls (FakeCluster): when the lr-find Job
appears it writes a real lr_find.json (common.lr_range's own Recorder and save), when a trainer
Job appears it writes the run's hparams.json, a scored result and complete.json as its trainer
would, and at the next poll ranks it in leaderboard.json as the evaluator would.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time

import pytest
import yaml

from common import layout, lr_range, results, storage
from launcher import names, remove, tune, tune_cluster
from launcher.kube import Cluster
from launcher.objects import VALUES_ENV
from tests.test_launcher_kube import NAMESPACE, Emulator, launcher
from tests.test_launcher_kube import bucket as bucket  # noqa: F401 - fixture
from tests.test_launcher_kube import cluster as cluster  # noqa: F401 - fixture

pytest.importorskip("kmock")

LAUNCHER_SA = "inception-finetune-launcher"
BEST_LR = 3e-4  # where the fake trainers' top-1 peaks
STOPS_BELOW = 1e-5  # a fake trainer with a smaller lr stops itself at its first rung


def tune_argv(bucket: str, *extra: str) -> list[str]:  # noqa: F811
    return [
        "tune", "--backend", "kubernetes",
        "--data", f"{bucket}/datasets/colours", "--out", f"{bucket}/sweeps/flowers",
        "--max-rounds", "1", "--poll-interval", "0.01", "--steps", "6", *extra,
    ]  # fmt: skip


def api(cluster: Emulator) -> Cluster:  # noqa: F811
    return Cluster(namespace=NAMESPACE)


def create_launcher_account(cluster: Emulator) -> None:  # noqa: F811
    """What `kubectl apply -f k8s/rbac.yaml` makes that the tuner Job needs: its account."""
    api(cluster).create({"apiVersion": "v1", "kind": "ServiceAccount",
                         "metadata": {"name": LAUNCHER_SA}})  # fmt: skip


def jobs(cluster: Emulator) -> dict[str, dict]:  # noqa: F811
    return {name: obj for (plural, name), obj in cluster.live().items() if plural == "jobs"}


def snapshot(cluster: Emulator) -> str:  # noqa: F811
    """Every live object, as text to compare."""
    return json.dumps(sorted((f"{k[0]}/{k[1]}", v) for k, v in cluster.live().items()))


def container(job: dict) -> dict:
    (only,) = job["spec"]["template"]["spec"]["containers"]
    return only


# ---------------------------------------------------------------- from a laptop


def test_the_laptop_creates_the_tuner_job_once(cluster: Emulator, bucket: str) -> None:  # noqa: F811
    create_launcher_account(cluster)
    code, stdout, stderr = launcher(*tune_argv(bucket, "--budget-steps", "500"))
    assert code == 0, stderr
    assert sorted(cluster.live()) == [("jobs", "flowers-tuner"), ("serviceaccounts", LAUNCHER_SA)]
    job = jobs(cluster)["flowers-tuner"]
    c = container(job)
    assert c["image"] == "inception-finetune-cpu:0.1.0"
    assert c["command"] == ["python", "-m", "launcher", "tune"]
    out = f"{bucket}/sweeps/flowers"
    assert c["args"] == [
        "--backend", "kubernetes", "--in-cluster",
        "--data", f"{bucket}/datasets/colours", "--out", out, "--name", "flowers",
        "--early-stop", "asha", "--eta", "3",
        "--threshold", "0.01", "--max-rounds", "1", "--poll-interval", "0.01",
        "--budget-steps", "500", "--steps", "6",
    ]  # fmt: skip
    env = {e["name"]: e["value"] for e in c["env"]}
    values = json.loads(env[VALUES_ENV])
    assert (values["data"], values["out"], values["name"]) == (
        f"{bucket}/datasets/colours", out, "flowers",
    )  # fmt: skip
    assert values["trainerArgs"] == ["--steps", "6"] and "lrs" not in values
    assert values["tuner"]["budgetSteps"] == 500 and values["uid"] == 10001
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == LAUNCHER_SA
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "tuner"
    assert names.SWEEP_LABEL in job["metadata"]["labels"]
    assert "suspend" not in job["spec"]
    assert "kubectl -n sweeps logs -f job/flowers-tuner" in stdout
    assert f"python -m launcher status --sweep {out} --backend kubernetes -n sweeps" in stdout
    assert "python -m launcher delete --sweep flowers -n sweeps" in stdout
    sweep = layout.SweepDir(out).load()  # the base record, as Tuner.run writes it first
    assert sweep.candidates == [] and sweep.stages == []
    assert sweep.trainer_args == ["--steps", "6"] and sweep.early_stop.rule == "asha"

    before = snapshot(cluster)
    code, stdout, stderr = launcher(*tune_argv(bucket, "--budget-steps", "500"))
    assert code == 0, stderr
    assert "(already there and unchanged)" in stdout
    assert snapshot(cluster) == before

    code, _, stderr = launcher(*tune_argv(bucket, "--budget-steps", "900"))
    assert code == 2 and stderr.count("\n") == 1
    assert "Job flowers-tuner already exists in namespace sweeps with a different spec" in stderr
    assert snapshot(cluster) == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "/tmp/sweeps/x"], "--out /tmp/sweeps/x is a local path, which pods cannot see"),
        (["--name", "Flowers"], "sweep name 'Flowers' cannot be a Kubernetes name"),
        (["--poll-interval", "0"], "--poll-interval"),
        (["--data", "gs://nowhere-bucket-x/d"], "gs://nowhere-bucket-x/d"),
    ],
)
def test_a_bad_value_creates_and_writes_nothing(
    cluster: Emulator,  # noqa: F811
    bucket: str,  # noqa: F811
    extra: list[str],
    message: str,
) -> None:
    create_launcher_account(cluster)
    code, _, stderr = launcher(*tune_argv(bucket, *extra))
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert message in stderr
    assert sorted(cluster.live()) == [("serviceaccounts", LAUNCHER_SA)]
    assert not storage.exists(f"{bucket}/sweeps/flowers/sweep.json")


def test_a_values_file_the_chart_refuses_creates_nothing(
    cluster: Emulator,  # noqa: F811
    bucket: str,  # noqa: F811
    tmp_path,  # noqa: ANN001
) -> None:
    create_launcher_account(cluster)
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"tuner": {"maxRounds": 99}}))
    code, _, stderr = launcher(*tune_argv(bucket)[:-6], "--steps", "6", "-f", str(values))
    assert code == 2 and "tuner.maxRounds" in stderr and stderr.count("\n") == 1, stderr
    assert sorted(cluster.live()) == [("serviceaccounts", LAUNCHER_SA)]
    assert not storage.exists(f"{bucket}/sweeps/flowers/sweep.json")


def test_without_the_tuners_service_account_nothing_is_created(
    cluster: Emulator,  # noqa: F811
    bucket: str,  # noqa: F811
) -> None:
    code, _, stderr = launcher(*tune_argv(bucket))
    assert code == 2 and stderr.count("\n") == 1
    assert f"the tuner runs as ServiceAccount {LAUNCHER_SA}" in stderr
    assert "k8s/rbac.yaml" in stderr
    assert cluster.live() == {}
    assert not storage.exists(f"{bucket}/sweeps/flowers/sweep.json")


def test_dry_run_prints_the_job_and_contacts_nothing(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    code, stdout, stderr = launcher(
        "tune", "--backend", "kubernetes", "--dry-run", "--data", "gs://b-x/d", "--out",
        "gs://b-x/sweeps/s", "--early-stop", "none",
    )  # fmt: skip
    assert code == 0, stderr
    (job,) = [d for d in yaml.safe_load_all(stdout) if d]
    assert job["metadata"]["name"] == "s-tuner"
    args = container(job)["args"]
    assert args[args.index("--early-stop") + 1] == "none"  # told: no early stopping in the pod
    assert "--eta" not in args


# ---------------------------------------------------------------- in the pod


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (None, "--in-cluster reads its settings from FINETUNE_VALUES, which is not set"),
        ("{not json", "FINETUNE_VALUES is not valid JSON"),
        ("[1]", "FINETUNE_VALUES must hold a JSON object of values"),
    ],
)
def test_the_pod_without_its_values_is_one_sentence(monkeypatch, env, message) -> None:  # noqa: ANN001
    if env is None:
        monkeypatch.delenv(VALUES_ENV, raising=False)
    else:
        monkeypatch.setenv(VALUES_ENV, env)
    code, _, stderr = launcher("tune", "--backend", "kubernetes", "--in-cluster", "--data",
                               "gs://b-x/d", "--out", "gs://b-x/sweeps/s")  # fmt: skip
    assert code == 2 and stderr.count("\n") == 1 and message in stderr, stderr


def fake_range_test(data: str) -> lr_range.LrFind:
    """A range test's record made as the trainer makes it: the loss falls until lr 1e-3, then
    explodes."""
    recorder = lr_range.Recorder(lr_range.Settings())
    while not recorder.done:
        lr = recorder.next_lr()
        recorder.add(2.0 - 1.5 * min(1.0, lr / 1e-3) + (lr / 1e-2) ** 2)
    points = recorder.points
    smoothed = [p.smoothed if p.smoothed is not None else math.nan for p in points]
    return lr_range.LrFind(
        data=data, settings=recorder.settings, trainer_flags={}, curve=points,
        stopped=recorder.stopped,
        suggestions=lr_range.suggest([p.lr for p in points], smoothed, lr_range.NUM_STEPS),
        created=layout.now(),
    )  # fmt: skip


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


class FakeCluster:
    """The pods of the Jobs the tuner creates, and the evaluator, played between its polls."""

    def __init__(self, emulator: Emulator, out: str, fail: str | None = None) -> None:
        self.emulator, self.sweep_dir = emulator, layout.SweepDir(out)
        self.fail = fail  # a Job to give the Failed condition instead of running it
        self.ran: set[str] = set()
        self.unranked: list[str] = []  # runs complete, not yet on the leaderboard
        self.polls = 0

    def tick(self, seconds: float) -> None:
        self.polls += 1
        assert self.polls < 200, "the tuner polls on and on"
        self.rank()  # the evaluator scores what finished at the last poll
        for name, job in sorted(jobs(self.emulator).items()):
            if name in self.ran or job["metadata"]["labels"]["app.kubernetes.io/component"] in (
                "tuner",
            ):
                continue
            self.ran.add(name)
            if name == self.fail:
                fail_job(self.emulator, name)
                continue
            args = container(job)["args"]
            if job["metadata"]["labels"]["app.kubernetes.io/component"] == "lr-find":
                fake_range_test(flag(args, "--data")).save(flag(args, "--run-dir"))
            else:
                self.train(layout.RunDir(flag(args, "--run-dir")), float(flag(args, "--lr")))

    def train(self, run: layout.RunDir, lr: float) -> None:
        """What a trainer leaves: hparams.json, its final checkpoint scored, complete.json; a
        run below lr STOPS_BELOW stops itself early at its first rung (step 2), as asha would."""
        run.save_hparams({"lr": lr, "steps": 6})
        top1 = max(0.1, 0.9 - 0.2 * abs(math.log10(lr / BEST_LR)))
        step, scorer = (2, "trainer") if lr < STOPS_BELOW else (6, "evaluator")
        entry = results.entry(step, f"{run.checkpoints_dir}/ckpt-{step}",
                              {"top1": top1, "loss": 1.0 - top1}, "", scorer, "float32",
                              time.time())  # fmt: skip
        results.record(run.eval_dir, entry)
        complete = {"final_step": step, "finished": layout.now()}
        if lr < STOPS_BELOW:
            complete["stopped"] = {"rule": "asha", "step": 2, "reason": "not in the top 1/3"}
        run.save_complete(complete)
        self.unranked.append(run.name)

    def rank(self) -> None:
        """leaderboard.json as the evaluator writes it, from every run's results."""
        if not self.unranked:
            return
        rows = []
        for run in self.sweep_dir.runs():
            scored = results.read_all(run.eval_dir)
            if not scored:
                continue
            best = max(scored, key=lambda e: e["top1"])
            rows.append({"run": run.name, "best_top1": best["top1"], "best_loss": best["loss"],
                         "best_step": best["step"], "last_step": scored[-1]["step"],
                         "hparams": run.hparams()})  # fmt: skip
        rows.sort(key=lambda r: -r["best_top1"])
        for rank, row in enumerate(rows, start=1):
            row["rank"] = rank
        storage.write_json(self.sweep_dir.leaderboard_uri, {"runs": rows, "lag": {}})
        self.unranked = []


def fail_job(emulator: Emulator, name: str) -> None:  # noqa: F811
    """The Job controller's verdict once the pod exited 2: the Failed condition."""
    cluster = api(emulator)
    cluster._client.BatchV1Api(cluster.api).patch_namespaced_job_status(
        name, NAMESPACE,
        {"status": {"failed": 1, "conditions": [{
            "type": "Failed", "status": "True", "reason": "PodFailurePolicy",
            "message": "Container lr-find for pod sweeps/x failed with exit code 2 matching "
            "FailJob rule at index 1"}]}},
        _preload_content=False,
    )  # fmt: skip


def start_tuner_job(emulator: Emulator, bucket: str, monkeypatch, fake: FakeCluster) -> list[str]:  # noqa: ANN001, F811
    """Create the tuner Job from the laptop; set this process up as its pod: its env, and the
    fake cluster between the polls. Returns the pod's command line (less `python -m launcher`)."""
    create_launcher_account(emulator)
    code, _, stderr = launcher(*tune_argv(bucket))
    assert code == 0, stderr
    c = container(jobs(emulator)["flowers-tuner"])
    env = {e["name"]: e["value"] for e in c["env"]}
    monkeypatch.setenv(VALUES_ENV, env[VALUES_ENV])
    runner = functools.partial(tune_cluster.ClusterRunner, sleep=fake.tick)
    monkeypatch.setattr(tune_cluster, "ClusterRunner", runner)
    return [c["command"][-1], *c["args"]]


def test_the_tuner_pod_runs_every_stage_into_sweep_json(
    cluster: Emulator,  # noqa: F811
    bucket: str,  # noqa: F811
    monkeypatch,  # noqa: ANN001
    caplog,  # noqa: ANN001
) -> None:
    caplog.set_level("INFO", logger="launcher")
    out = f"{bucket}/sweeps/flowers"
    fake = FakeCluster(cluster, out)
    pod_command = start_tuner_job(cluster, bucket, monkeypatch, fake)
    code, _, stderr = launcher(*pod_command)
    assert code == 0, stderr + caplog.text

    sweep_dir = layout.SweepDir(out)
    sweep = sweep_dir.load()
    stages = {s.name: s for s in sweep.stages}
    assert list(stages) == ["lr-find", "coarse", "refine-1"]
    assert all(s.finished for s in sweep.stages)
    found = lr_range.LrFind.load(f"{out}/{layout.LR_FIND_DIR}")
    assert stages["lr-find"].lrs == [found.lr]
    assert stages["coarse"].lrs == tune.coarse_grid(found.lr, found.stopped.lr)
    # +0.06 is within the noise of a top-1 on the dataset's 3 validation images: tuning ends.
    ended = stages["refine-1"].ended
    assert re.fullmatch(r"refine-1 improved the best top-1 by \+0\.0\d+, less than the noise of "
                        r"a top-1 of 0\.\d+ on 3 validation images \(0\.2\d+, one standard "
                        r"error\)", ended), ended  # fmt: skip
    assert sweep.run_names() == stages["coarse"].runs + stages["refine-1"].runs
    best = stages["refine-1"].best
    assert best == tune.best_of(sweep_dir) and best["top1"] >= stages["coarse"].best["top1"]

    live = cluster.live()
    trainer_jobs = {name for name in jobs(cluster) if name not in ("flowers-tuner",
                                                                    "flowers-lr-find")}  # fmt: skip
    lrs = stages["coarse"].lrs + stages["refine-1"].lrs
    assert trainer_jobs == {names.trainer_job("flowers", lr) for lr in lrs}
    for key in (("deployments", "flowers-evaluator"), ("deployments", "flowers-tensorboard"),
                ("services", "flowers-tensorboard"), ("serviceaccounts", "flowers")):  # fmt: skip
        assert key in live
    lr_find = jobs(cluster)["flowers-lr-find"]
    c = container(lr_find)
    assert c["command"] == ["python", "-m", "trainer", "lr-find"]
    assert c["args"] == ["--data", f"{bucket}/datasets/colours", "--run-dir",
                         f"{out}/{layout.LR_FIND_DIR}", "--steps", "6"]  # fmt: skip
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert lr_find["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert "created Job sweeps/flowers-lr-find" in caplog.text
    for lr, run in zip(lrs, sweep.run_names(), strict=True):  # one line each, once over
        if lr < STOPS_BELOW:
            assert f"tune: {run} stopped early at step 2: not in the top 1/3" in caplog.text
        else:  # once the evaluator ranked its last step
            assert f"tune: {run} finished at step 6, best top-1 " in caplog.text
    stopped = sum(lr < STOPS_BELOW for lr in stages["coarse"].lrs)
    finished = len(stages["coarse"].lrs) - stopped
    assert stopped and (
        f"every run of the stage is over: {finished} finished, {stopped} stopped early, "
        "0 failed" in caplog.text
    )

    # The pod again (a retried one): nothing is redone, nothing created.
    before = snapshot(cluster)
    caplog.clear()
    code, _, stderr = launcher(*pod_command)
    assert code == 0, stderr
    assert f"tune: already done ({ended})" in caplog.text
    assert snapshot(cluster) == before

    code, stdout, stderr = launcher("status", "--sweep", out, "--backend", "kubernetes")
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == "tuner Job flowers-tuner: pending"
    assert lines[1] == "lr-find Job flowers-lr-find: pending"
    assert lines[2].startswith("stage lr-find (done)")

    code, stdout, stderr = launcher("delete", "--sweep", "flowers")
    assert code == 0, stderr
    assert {k for k in cluster.live() if k[0] != "pods"} == {("serviceaccounts", LAUNCHER_SA)}


def test_a_failed_range_test_ends_tuning_in_one_sentence(
    cluster: Emulator,  # noqa: F811
    bucket: str,  # noqa: F811
    monkeypatch,  # noqa: ANN001
) -> None:
    out = f"{bucket}/sweeps/flowers"
    fake = FakeCluster(cluster, out, fail="flowers-lr-find")
    code, _, stderr = launcher(*start_tuner_job(cluster, bucket, monkeypatch, fake))
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert stderr.startswith("error: the range test's Job flowers-lr-find failed: PodFailurePolicy")
    assert "kubectl -n sweeps logs job/flowers-lr-find" in stderr
    (stage,) = layout.SweepDir(out).load().stages
    assert stage.name == "lr-find" and stage.started and not stage.finished
    assert set(jobs(cluster)) == {"flowers-tuner", "flowers-lr-find"}  # no stage went on


def test_a_failed_run_ends_tuning_once_the_rest_of_its_stage_is_over(
    cluster: Emulator,  # noqa: F811
    bucket: str,  # noqa: F811
    monkeypatch,  # noqa: ANN001
    caplog,  # noqa: ANN001
) -> None:
    monkeypatch.setattr(tune_cluster, "HEARTBEAT_S", 0.0)  # a line at every poll
    caplog.set_level("INFO", logger="launcher")
    out = f"{bucket}/sweeps/flowers"
    found = fake_range_test("d")
    first = tune.coarse_grid(found.lr, found.stopped.lr)[0]
    failing = names.trainer_job("flowers", first)
    fake = FakeCluster(cluster, out, fail=failing)
    code, _, stderr = launcher(*start_tuner_job(cluster, bucket, monkeypatch, fake))
    assert code == 2 and stderr.count("\n") == 1, stderr
    run = layout.run_name_for_lr(first)
    assert f"1 run(s) of this stage failed ({run}: Job {failing} failed: PodFailurePolicy" in stderr
    sweep_dir = layout.SweepDir(out)
    stages = {s.name: s for s in sweep_dir.load().stages}
    assert list(stages) == ["lr-find", "coarse"] and not stages["coarse"].finished
    others = [r for r in stages["coarse"].runs if r != run]
    assert others and all(sweep_dir.run(r).is_complete() for r in others)
    # Between the trainer's complete.json and the evaluator's score, the tuner says it waits.
    assert f"{others[0]} (finished at step 6, waiting for the evaluator to score it)" in caplog.text


class UnscorableCluster(FakeCluster):
    """Trainers that finish, and an evaluator that can score none of their runs (a damaged
    validation split, say): every run is listed under `broken`, none ranked."""

    def train(self, run: layout.RunDir, lr: float) -> None:
        run.save_hparams({"lr": lr, "steps": 6})
        run.save_complete({"final_step": 6, "finished": layout.now()})
        self.unranked.append(run.name)

    def rank(self) -> None:
        if not self.unranked:
            return
        broken = [{"run": r.name, "reason": "validation-00000-of-00001 is damaged"}
                  for r in self.sweep_dir.runs()]  # fmt: skip
        storage.write_json(self.sweep_dir.leaderboard_uri, {"runs": [], "broken": broken})
        self.unranked = []


def test_tuning_that_scores_no_run_fails_the_pod_in_one_sentence(
    cluster: Emulator,  # noqa: F811
    bucket: str,  # noqa: F811
    monkeypatch,  # noqa: ANN001
) -> None:
    """Exit 2, so the Job fails at once: a retried pod would find tuning ended the same way."""
    out = f"{bucket}/sweeps/flowers"
    fake = UnscorableCluster(cluster, out)
    code, _, stderr = launcher(*start_tuner_job(cluster, bucket, monkeypatch, fake))
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert stderr.startswith("error: tuning ended with no run scored; see `python -m launcher "
                             f"status --sweep {out} --backend kubernetes`")  # fmt: skip
    stages = layout.SweepDir(out).load().stages
    assert [s.name for s in stages] == ["lr-find", "coarse"]
    assert stages[-1].ended == "no run was scored: nothing to refine around"


def test_in_cluster_needs_the_kubernetes_backend() -> None:
    code, _, stderr = launcher("tune", "--backend", "local", "--in-cluster", "--data",
                               "gs://b-x/d", "--out", "gs://b-x/sweeps/s")  # fmt: skip
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert "--in-cluster is what the tuner Job runs; it needs --backend kubernetes." in stderr


def test_delete_stops_the_tuner_before_anything_else(
    cluster: Emulator,  # noqa: F811
    bucket: str,  # noqa: F811
    monkeypatch,  # noqa: ANN001
    caplog,  # noqa: ANN001
) -> None:
    """A tuner left running while its sweep is deleted would create the next stage's objects:
    its Job goes first, and its pod is waited for (here it never goes: kmock runs no kubelet,
    so the wait is cut to nothing and says so)."""
    create_launcher_account(cluster)
    assert launcher(*tune_argv(bucket))[0] == 0
    code, _, stderr = launcher(
        "sweep", "--backend", "kubernetes", "--data", f"{bucket}/datasets/colours",
        "--out", f"{bucket}/sweeps/flowers", "--lrs", "0.1", "--steps", "6", "--early-stop", "asha",
        "--patience", "3",  # the tune's: three grace periods of 1 step
    )  # fmt: skip
    assert code == 0, stderr
    pod_labels = {**names.labels("flowers", "tuner"), "job-name": "flowers-tuner"}
    pod = {"name": "flowers-tuner-abcde", "labels": pod_labels}
    api(cluster).create({"apiVersion": "v1", "kind": "Pod", "metadata": pod})
    monkeypatch.setattr(remove, "TUNER_STOP_S", 0.0)
    caplog.set_level("INFO", logger="launcher")
    code, stdout, stderr = launcher("delete", "--sweep", "flowers")
    assert code == 0, stderr
    deleted = [line for line in caplog.text.splitlines() if " deleted " in f" {line}"]
    assert "deleted Job sweeps/flowers-tuner" in deleted[0]
    assert "the tuner's pod is still there after 0 s; deleting the rest anyway" in caplog.text
    assert "deleted 6 object(s) of sweep flowers" in stdout  # the tuner, a one-lr sweep's five
    assert {k for k in cluster.live() if k[0] != "pods"} == {("serviceaccounts", LAUNCHER_SA)}
