"""The kubernetes backend against kmock's Kubernetes API emulator and the GCS emulator.

kmock runs its asyncio server in a thread of this process; the launcher reaches it through a
generated kubeconfig (KUBECONFIG), exactly as a user's kubectl would. The dataset and the sweep
dir live in a bucket of the GCS emulator, since pods only see gs:// URIs. kmock ignores label
selectors (the launcher filters by labels itself) and does not validate schemas (the render
tests do that).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
import time
from collections.abc import Iterator

import pytest
import yaml

from common import layout, storage
from common.cli import run_main
from launcher import names, status
from launcher.cli import main
from launcher.kube import Cluster
from tests.trainer_testdata import free_port, write_dataset

kmock = pytest.importorskip("kmock")

NAMESPACE = "sweeps"
RESOURCES = (
    "batch/v1/jobs",
    "apps/v1/deployments",
    "v1/services",
    "v1/serviceaccounts",
    "v1/pods",
    "v1/events",
)


class Emulator:
    """kmock's KubernetesEmulator served on 127.0.0.1 from a background event loop."""

    def __init__(self, with_pod_monitors: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.with_pod_monitors = with_pod_monitors

    def start(self) -> Emulator:
        self.thread.start()

        async def enter() -> None:
            self.api = kmock.KubernetesEmulator()
            await self.api.__aenter__()
            self.server = kmock.Server(self.api)
            await self.server.__aenter__()
            for resource in RESOURCES:
                self.api.resources[resource] = {}
            if self.with_pod_monitors:
                self.api.resources["monitoring.coreos.com/v1/podmonitors"] = {}

        asyncio.run_coroutine_threadsafe(enter(), self.loop).result(30)
        self.url = str(self.server.url).rstrip("/")
        return self

    def stop(self) -> None:
        async def leave() -> None:
            await self.server.__aexit__(None, None, None)
            await self.api.__aexit__(None, None, None)

        asyncio.run_coroutine_threadsafe(leave(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def live(self) -> dict[tuple[str, str], dict]:
        """(kind plural, name) -> object, for every object not deleted."""
        return {
            (resource.plural, name): obj.raw
            for (resource, _ns, name), obj in list(self.api.objects.items())
            if not obj.deleted
        }


def kubeconfig(path: str, server: str) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emu", "cluster": {"server": server}}],
        "users": [{"name": "me", "user": {"token": "x"}}],
        "contexts": [
            {"name": "emu", "context": {"cluster": "emu", "user": "me", "namespace": NAMESPACE}}
        ],  # fmt: skip
        "current-context": "emu",
    }
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


@pytest.fixture
def cluster(tmp_path, monkeypatch) -> Iterator[Emulator]:  # noqa: ANN001
    emulator = Emulator().start()
    monkeypatch.setenv("KUBECONFIG", kubeconfig(str(tmp_path / "kubeconfig"), emulator.url))
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def bucket(gcs_bucket: str) -> str:
    write_dataset(f"{gcs_bucket}/datasets/colours", train_per_class=2, val_per_class=1,
                  train_shards=1, size=32)  # fmt: skip
    return gcs_bucket


def launcher(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run_main(main, list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def sweep_argv(bucket: str, *extra: str) -> list[str]:
    return [
        "sweep", "--backend", "kubernetes",
        "--data", f"{bucket}/datasets/colours", "--out", f"{bucket}/sweeps/flowers",
        "--lrs", "0.1,0.01,0.001", "--steps", "100", *extra,
    ]  # fmt: skip


def test_create_rerun_conflict_status_delete(cluster: Emulator, bucket: str, caplog) -> None:  # noqa: ANN001
    caplog.set_level("INFO", logger="launcher")
    code, stdout, stderr = launcher(*sweep_argv(bucket))
    assert code == 0, stderr
    live = cluster.live()
    jobs = sorted(name for plural, name in live if plural == "jobs")
    assert jobs == ["flowers-lr-0-001", "flowers-lr-0-01", "flowers-lr-0-1"]
    assert ("deployments", "flowers-evaluator") in live
    assert ("deployments", "flowers-tensorboard") in live
    assert ("services", "flowers-tensorboard") in live
    assert ("serviceaccounts", "flowers") in live
    assert len(live) == 7
    for obj in live.values():
        assert names.SPEC_HASH in obj["metadata"]["annotations"]
    assert "kubectl -n sweeps port-forward svc/flowers-tensorboard 6006:6006" in stdout
    sweep = layout.SweepDir(f"{bucket}/sweeps/flowers").load()
    assert sweep.run_names() == ["lr-0.1", "lr-0.01", "lr-0.001"]
    assert sweep.trainer_args == ["--steps", "100"]

    # The same sweep again: nothing new.
    caplog.clear()
    before = {k: json.dumps(v, sort_keys=True) for k, v in cluster.live().items()}
    code, _, stderr = launcher(*sweep_argv(bucket))
    assert code == 0, stderr
    assert "0 object(s) created, 7 already there and unchanged" in caplog.text
    assert {k: json.dumps(v, sort_keys=True) for k, v in cluster.live().items()} == before

    # Another spec under the same names: one sentence, nothing created or written.
    code, _, stderr = launcher(*sweep_argv(bucket, "--image-tag", "v2"))
    assert code == 2
    assert stderr.count("\n") == 1 and "with a different spec" in stderr
    code, _, stderr = launcher(*sweep_argv(bucket, "--steps", "7")[:-2], "--steps", "7")
    assert code == 2 and "with a different spec" in stderr
    assert len(cluster.live()) == 7
    assert layout.SweepDir(f"{bucket}/sweeps/flowers").load().trainer_args == ["--steps", "100"]

    # Status: the Jobs' states as the cluster reports them.
    api = Cluster(namespace=NAMESPACE)
    batch = api._client.BatchV1Api(api.api)
    batch.patch_namespaced_job_status(
        "flowers-lr-0-1", NAMESPACE,
        {"status": {"failed": 1, "conditions": [{
            "type": "Failed", "status": "True", "reason": "PodFailurePolicy",
            "message": "Container trainer for pod sweeps/x failed with exit code 2 matching "
            "FailJob rule at index 2"}]}},
        _preload_content=False,
    )  # fmt: skip
    batch.patch_namespaced_job_status(
        "flowers-lr-0-01", NAMESPACE, {"status": {"active": 1}}, _preload_content=False
    )
    pod_labels = {**names.labels("flowers", "trainer", 0.01), "job-name": "flowers-lr-0-01"}
    api._client.CoreV1Api(api.api).create_namespaced_pod(
        NAMESPACE,
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "flowers-lr-0-01-abcde", "labels": pod_labels},
         "status": {"phase": "Pending", "conditions": [{
             "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}},
        _preload_content=False,
    )  # fmt: skip
    code, stdout, stderr = launcher(
        "status", "--sweep", f"{bucket}/sweeps/flowers", "--backend", "kubernetes"
    )
    assert code == 0, stderr
    rows = {line.split()[0]: line for line in stdout.splitlines()[1:]}
    assert "failed: PodFailurePolicy: Container trainer" in rows["lr-0.1"]
    assert "pending: Unschedulable: 0/3 nodes are available" in rows["lr-0.01"]
    assert "pending" in rows["lr-0.001"]

    # Delete: every object of the sweep, never the bucket.
    code, stdout, stderr = launcher("delete", "--sweep", "flowers")
    assert code == 0, stderr
    assert "deleted 7 object(s)" in stdout
    remaining = {k for k in cluster.live() if k[0] != "pods"}  # pods go with their Jobs
    assert remaining == set()
    assert storage.exists(f"{bucket}/sweeps/flowers/sweep.json")
    assert storage.exists(f"{bucket}/datasets/colours/dataset.json")


def test_refine_launch_adds_jobs_only(cluster: Emulator, bucket: str) -> None:
    code, _, stderr = launcher(*sweep_argv(bucket))
    assert code == 0, stderr
    out = f"{bucket}/sweeps/flowers"
    board = {"runs": [{"run": "lr-0.01", "rank": 1, "best_top1": 0.9, "best_step": 100,
                       "best_loss": 0.3, "hparams": {"lr": 0.01}}]}  # fmt: skip
    storage.write_json(layout.SweepDir(out).leaderboard_uri, board)
    code, stdout, stderr = launcher("refine", "--sweep", out)
    assert code == 0, stderr
    assert "next: --lrs 0.05,0.02,0.005,0.002" in stdout
    assert len(cluster.live()) == 7  # a proposal only
    code, stdout, stderr = launcher("refine", "--sweep", out, "--launch", "--backend", "kubernetes")
    assert code == 0, stderr
    jobs = {name for plural, name in cluster.live() if plural == "jobs"}
    assert {"flowers-lr-0-05", "flowers-lr-0-02", "flowers-lr-0-005", "flowers-lr-0-002"} <= jobs
    assert len(cluster.live()) == 11
    sweep = layout.SweepDir(out).load()
    assert len(sweep.candidates) == 7 and sweep.trainer_args == ["--steps", "100"]


def test_pod_monitor_needs_the_operator(cluster: Emulator, bucket: str, tmp_path) -> None:  # noqa: ANN001
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"podMonitor": {"enabled": True}}))
    code, _, stderr = launcher(*sweep_argv(bucket, "-f", str(values)))
    assert code == 2 and "no PodMonitor resource" in stderr
    assert cluster.live() == {}
    assert not storage.exists(f"{bucket}/sweeps/flowers/sweep.json")


def test_pod_monitor_is_created_with_the_operator(bucket: str, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    emulator = Emulator(with_pod_monitors=True).start()
    try:
        monkeypatch.setenv("KUBECONFIG", kubeconfig(str(tmp_path / "kc"), emulator.url))
        values = tmp_path / "v.yaml"
        values.write_text(yaml.safe_dump({"podMonitor": {"enabled": True}}))
        code, _, stderr = launcher(*sweep_argv(bucket, "-f", str(values)))
        assert code == 0, stderr
        assert ("podmonitors", "flowers") in emulator.live()
        assert launcher("delete", "--sweep", "flowers")[0] == 0
        assert emulator.live() == {}
    finally:
        emulator.stop()


def test_unreachable_cluster_is_one_quick_sentence(bucket: str, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    server = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    monkeypatch.setenv("KUBECONFIG", kubeconfig(str(tmp_path / "kc"), server))
    started = time.monotonic()
    code, _, stderr = launcher(*sweep_argv(bucket))
    assert time.monotonic() - started < 10
    assert code == 2
    assert stderr.startswith(f"error: cannot reach the Kubernetes API at {server}")
    assert stderr.count("\n") == 1
    assert not storage.exists(f"{bucket}/sweeps/flowers/sweep.json")


def test_credentials_in_the_kubeconfig_server_url_are_never_echoed(
    bucket: str,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    port = free_port()  # nobody listens there
    server = f"http://alice:s3cret-pw@127.0.0.1:{port}/k8s?token=s3cret-token"
    monkeypatch.setenv("KUBECONFIG", kubeconfig(str(tmp_path / "kc"), server))
    code, _, stderr = launcher(*sweep_argv(bucket))
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert "s3cret" not in stderr and "alice" not in stderr, stderr
    assert f"http://***@127.0.0.1:{port}/k8s?token=***" in stderr


def test_no_kubeconfig_is_one_sentence(bucket: str, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, _, stderr = launcher(*sweep_argv(bucket))
    assert code == 2 and stderr.startswith("error: no usable Kubernetes configuration")
    assert stderr.count("\n") == 1


def test_job_states() -> None:
    job = {"spec": {}, "status": {}}
    assert status.job_state(job, []) == "pending"
    assert status.job_state({"spec": {"suspend": True}, "status": {}}, []) == "queued (suspended)"
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert status.job_state(done, []) == "succeeded"
    running = {"status": {"active": 1, "failed": 2}}
    failed_pod = {"status": {"phase": "Failed", "containerStatuses": [
        {"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}}  # fmt: skip
    live_pod = {"status": {"phase": "Running"}}
    assert status.job_state(running, [failed_pod, live_pod]) == (
        "running after 2 failed pod(s), last exit code 137 (OOMKilled)"
    )
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}
    pulling = {"status": {"phase": "Pending", "containerStatuses": [{"state": waiting}]}}
    assert status.job_state({"status": {"active": 1}}, [pulling]) == (
        "pending: ImagePullBackOff: no such image"
    )


def _indexed_pod(api: Cluster, job: str, lr: float, index: int, name: str, status: dict) -> None:
    labels = {
        **names.labels("flowers", "trainer", lr),
        "batch.kubernetes.io/job-name": job,
        "batch.kubernetes.io/job-completion-index": str(index),
    }
    api._client.CoreV1Api(api.api).create_namespaced_pod(
        NAMESPACE,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
         "status": status},
        _preload_content=False,
    )  # fmt: skip


def test_several_workers_create_rerun_status_delete(cluster: Emulator, bucket: str) -> None:
    """--workers 2: per lr a headless Service and an Indexed Job of 2 pods; the same launch
    again creates nothing, another worker count is a conflict; status shows each run's
    workers; delete removes the Services too."""
    code, stdout, stderr = launcher(*sweep_argv(bucket, "--workers", "2"))
    assert code == 0, stderr
    assert "3 trainer Job(s) of 2 worker pods each" in stdout
    assert "port-forward svc/flowers-tensorboard 6006:6006" in stdout
    live = cluster.live()
    services = sorted(name for plural, name in live if plural == "services")
    assert services == [
        "flowers-lr-0-001",
        "flowers-lr-0-01",
        "flowers-lr-0-1",
        "flowers-tensorboard",
    ]
    assert len(live) == 10
    job = live[("jobs", "flowers-lr-0-1")]
    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 2)
    assert job["spec"]["template"]["spec"]["subdomain"] == "flowers-lr-0-1"
    assert live[("services", "flowers-lr-0-1")]["spec"]["clusterIP"] == "None"
    sweep = layout.SweepDir(f"{bucket}/sweeps/flowers").load()
    assert sweep.trainer_args == ["--steps", "100"]  # the worker count is no trainer flag

    assert launcher(*sweep_argv(bucket, "--workers", "2"))[0] == 0
    assert len(cluster.live()) == 10
    code, _, stderr = launcher(*sweep_argv(bucket, "--workers", "3"))
    assert code == 2 and "Job flowers-lr-0-1 already exists" in stderr, stderr

    api = Cluster(namespace=NAMESPACE)
    batch = api._client.BatchV1Api(api.api)
    for job_name in ("flowers-lr-0-1", "flowers-lr-0-01"):
        batch.patch_namespaced_job_status(
            job_name, NAMESPACE, {"status": {"active": 2}}, _preload_content=False
        )
    running = {"phase": "Running"}
    unschedulable = {"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}  # fmt: skip
    _indexed_pod(api, "flowers-lr-0-1", 0.1, 0, "flowers-lr-0-1-0-aaaaa", running)
    _indexed_pod(api, "flowers-lr-0-1", 0.1, 1, "flowers-lr-0-1-1-bbbbb", running)
    _indexed_pod(api, "flowers-lr-0-01", 0.01, 0, "flowers-lr-0-01-0-ccccc", running)
    _indexed_pod(api, "flowers-lr-0-01", 0.01, 1, "flowers-lr-0-01-1-ddddd", unschedulable)
    code, stdout, stderr = launcher(
        "status", "--sweep", f"{bucket}/sweeps/flowers", "--backend", "kubernetes"
    )
    assert code == 0, stderr
    header, *lines = stdout.splitlines()
    assert header.split()[:4] == ["run", "lr", "state", "workers"]
    rows = {line.split()[0]: line for line in lines}
    assert "running  2/2 workers running" in rows["lr-0.1"]
    assert "running  1/2 workers running (worker 0 running, 1 pending)" in rows["lr-0.01"]
    assert "0/2 workers running (worker 0 no pod, 1 no pod)" in rows["lr-0.001"]

    code, stdout, stderr = launcher("delete", "--sweep", "flowers")
    assert code == 0, stderr
    assert "deleted 10 object(s)" in stdout
    assert {k for k in cluster.live() if k[0] != "pods"} == set()


def test_workers_states() -> None:
    def job(**status: object) -> dict:
        return {"spec": {"completionMode": "Indexed", "completions": 3}, "status": status}

    def pod(index: int, phase: str, **meta: object) -> dict:
        labels = {"batch.kubernetes.io/job-completion-index": str(index)}
        return {"metadata": {"labels": labels, **meta}, "status": {"phase": phase}}

    assert status.workers_state({"spec": {}, "status": {}}, [pod(0, "Running")]) == ""
    single = {"spec": {"completionMode": "Indexed", "completions": 1}, "status": {}}
    assert status.workers_state(single, []) == ""
    pods = [pod(0, "Running"), pod(1, "Running"), pod(2, "Running")]
    assert status.workers_state(job(active=3), pods) == "3/3 workers running"
    # The newest pod of each index counts (oldest first): index 1 failed, its replacement waits.
    pods = [pod(0, "Running"), pod(1, "Failed"), pod(2, "Running", deletionTimestamp="x"),
            pod(1, "Pending")]  # fmt: skip
    assert status.workers_state(job(active=3, failed=1), pods) == (
        "1/3 workers running (worker 0 running, 1 pending, 2 terminating)"
    )
    by_annotation = {"metadata": {"annotations": {"batch.kubernetes.io/job-completion-index": "2"}},
                     "status": {"phase": "Running"}}  # fmt: skip
    assert status.workers_state(job(), [by_annotation]) == (
        "1/3 workers running (worker 0 no pod, 1 no pod, 2 running)"
    )
    done = job(conditions=[{"type": "SuccessCriteriaMet", "status": "True"}])
    assert status.workers_state(done, pods) == ""
    assert status.job_state(done, pods) == "succeeded"
