"""The launcher's Kubernetes objects: schema-valid, restricted, and shaped as the brief says.

Rendered through the real command line (`sweep --backend kubernetes --dry-run`), parsed back
from its YAML and checked with kubernetes-validate --strict against the oldest and the newest
Kubernetes minor we claim (1.31: podFailurePolicy GA; 1.37: the newest schemas we have). The
PodMonitor is a CRD with no schema there; its shape is asserted instead.
"""

from __future__ import annotations

import argparse

import pytest
import yaml

from common.cli import run_main
from launcher import trainer_flags
from launcher.cli import main

kubernetes_validate = pytest.importorskip("kubernetes_validate")

VERSIONS = ("1.31", "1.37")
DATA = "gs://bucket-x/datasets/flowers"
OUT = "gs://bucket-x/sweeps/flowers-lr"
BASE = ["sweep", "--backend", "kubernetes", "--dry-run", "--data", DATA, "--out", OUT]


def render(capsys: pytest.CaptureFixture, *extra: str) -> list[dict]:
    code = run_main(main, [*BASE, "--lrs", "0.1,0.01,1e-05", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return [doc for doc in yaml.safe_load_all(out) if doc]


def kinds(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def pods(objs: list[dict]) -> list[dict]:
    return [o["spec"]["template"]["spec"] for o in objs if o["kind"] in ("Job", "Deployment")]


@pytest.fixture
def values_file(tmp_path) -> str:  # noqa: ANN001
    """Every optional part switched on: PodMonitor, Kueue, key file, pull secret, placement."""
    path = tmp_path / "values.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "podMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
                "kueue": {"queueName": "team-a"},
                "credentials": {"secretName": "bucket-key", "key": "sa.json"},
                "image": {"pullSecrets": ["regcred"], "pullPolicy": "Always"},
                "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "x@y"}},
                "trainer": {
                    "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                    "activeDeadlineSeconds": 86400,
                },
                "storageEmulatorHost": "http://fake-gcs:4443",
                "trainerArgs": ["--batch-size", "64", "--weights", "none"],
            }
        )
    )
    return str(path)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_is_schema_valid(capsys, values_file, version) -> None:  # noqa: ANN001
    for extra in ([], ["-f", values_file, "--gpus", "0", "--steps", "50"]):
        objs = render(capsys, *extra)
        for obj in objs:
            if obj["kind"] == "PodMonitor":
                continue
            kubernetes_validate.validate(obj, version, strict=True)


def test_default_objects(capsys) -> None:  # noqa: ANN001
    objs = render(capsys, "--steps", "100")
    assert [o["kind"] for o in objs] == [
        "ServiceAccount", "Service", "Deployment", "Deployment", "Job", "Job", "Job",
    ]  # fmt: skip
    assert [o["metadata"]["name"] for o in kinds(objs, "Job")] == [
        "flowers-lr-lr-0-1", "flowers-lr-lr-0-01", "flowers-lr-lr-1e-05",
    ]  # fmt: skip
    job = kinds(objs, "Job")[1]
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "flowers-lr"
    assert labels["app.kubernetes.io/component"] == "trainer"
    assert labels["inception-finetune/lr"] == "0.01"
    assert labels["inception-finetune/run"] == "lr-0.01"
    for key in ("name", "instance", "component", "part-of", "managed-by"):
        assert f"app.kubernetes.io/{key}" in labels
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    spec = job["spec"]
    assert spec["podReplacementPolicy"] == "Failed"
    assert spec["backoffLimit"] == 3
    assert "suspend" not in spec and "activeDeadlineSeconds" not in spec
    rules = spec["podFailurePolicy"]["rules"]
    assert {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    } in rules  # noqa: E501
    assert any(
        r["action"] == "Ignore" and r["onExitCodes"]["values"] == [143]
        for r in rules
        if "onExitCodes" in r
    )
    fail = [r for r in rules if r["action"] == "FailJob"]
    assert fail == [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}}]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["terminationGracePeriodSeconds"] == 120
    trainer = pod["containers"][0]
    assert trainer["image"].startswith("inception-finetune-gpu:")
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert trainer["args"][:10] == [
        "--data", DATA, "--run-dir", f"{OUT}/runs/lr-0.01", "--lr", "0.01",
        "--exit-code-on-stop", "143", "--metrics-port", "9090",
    ]  # fmt: skip
    assert trainer["args"][10:] == ["--steps", "100"]
    assert trainer["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    record = pod["initContainers"][0]
    assert record["command"][-2:] == ["launcher", "record-sweep"]
    assert record["args"] == [
        "--out", OUT, "--data", DATA, "--name", "flowers-lr", "--lrs", "0.01", "--steps", "100",
    ]  # fmt: skip

    evaluator = kinds(objs, "Deployment")[0]
    assert evaluator["metadata"]["name"] == "flowers-lr-evaluator"
    assert evaluator["spec"]["replicas"] == 1
    assert evaluator["spec"]["strategy"] == {"type": "Recreate"}
    container = evaluator["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("inception-finetune-cpu:")
    assert "--keep-running" in container["args"]
    assert "nvidia.com/gpu" not in str(container.get("resources"))
    assert container["ports"][0]["name"] == "metrics"
    service = kinds(objs, "Service")[0]
    assert service["spec"]["type"] == "ClusterIP"
    tensorboard = kinds(objs, "Deployment")[1]
    assert service["spec"]["selector"] == tensorboard["spec"]["selector"]["matchLabels"]


def test_every_pod_is_restricted(capsys, values_file) -> None:  # noqa: ANN001
    objs = render(capsys, "-f", values_file)
    assert len(pods(objs)) == 5
    for pod in pods(objs):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == 1000
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
        assert volumes["credentials"]["secret"]["secretName"] == "bucket-key"
        for container in pod.get("initContainers", []) + pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert container["imagePullPolicy"] == "Always"
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/tmp", "/var/cache/keras", "/var/secrets/google"} <= mounts
            env = {e["name"]: e["value"] for e in container["env"]}
            assert env["HOME"] == "/tmp" and env["KERAS_HOME"] == "/var/cache/keras"
            assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/secrets/google/sa.json"
            assert env["STORAGE_EMULATOR_HOST"] == "http://fake-gcs:4443"
            assert "valueFrom" not in str(container["env"])  # the key is a file, not env
            assert "sa.json" not in " ".join(container.get("args", []))


def test_optional_parts(capsys, values_file) -> None:  # noqa: ANN001
    objs = render(capsys, "-f", values_file, "--gpus", "0", "--image-tag", "v9")
    for job in kinds(objs, "Job"):
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        assert job["spec"]["activeDeadlineSeconds"] == 86400
        pod = job["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
        trainer = pod["containers"][0]
        assert trainer["image"] == "inception-finetune-cpu:v9"  # no GPU: the CPU image
        assert "nvidia.com/gpu" not in trainer["resources"].get("limits", {})
        assert trainer["args"][10:] == ["--batch-size", "64", "--weights", "none"]
    (monitor,) = kinds(objs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "interval": "30s"}]
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "flowers-lr"
    (account,) = kinds(objs, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": "x@y"}


def test_preprocess_job(capsys) -> None:  # noqa: ANN001
    argv = ["preprocess", "--train-dir", "gs://bucket-x/img/train", "--val-dir",
            "gs://bucket-x/img/val", "--out", DATA, "--tasks", "4", "--dry-run"]  # fmt: skip
    assert run_main(main, argv) == 0
    objs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    (job,) = kinds(objs, "Job")
    assert job["metadata"]["name"] == "flowers-preprocess"
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert args[-2:] == ["--task-count", "4"]
    for obj in objs:
        for version in VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_trainer_flag_table_matches_the_trainer() -> None:
    """launcher/trainer_flags.py mirrors trainer/config.py (the launcher may not import it)."""
    config = pytest.importorskip("trainer.config")
    theirs = {
        option
        for action in config.build_parser()._actions
        for option in action.option_strings
        if option.startswith("--")
    }
    assert theirs - set(trainer_flags.RESERVED) == set(trainer_flags.FLAGS) | {
        "--help",
        "--verbose",
    }


def test_trainer_args_keep_their_order_and_merge() -> None:
    base = trainer_flags.check(["--weights", "none", "--steps", "5", "--xla"], "values")
    assert base == ["--weights", "none", "--steps", "5", "--xla"]
    assert trainer_flags.merge(base, ["--epochs", "2", "--weights", "imagenet"]) == [
        "--weights", "imagenet", "--xla", "--epochs", "2",
    ]  # fmt: skip
    parser = argparse.ArgumentParser()
    trainer_flags.add_to(parser)
    namespace = parser.parse_args(["--xla", "--steps", "7", "--epochs", "3", "--steps", "8"])
    assert trainer_flags.from_namespace(namespace) == ["--xla", "--epochs", "3", "--steps", "8"]


def test_rbac_grants_what_the_launcher_uses_and_no_more(capsys, values_file) -> None:  # noqa: ANN001
    import os

    from launcher import kube

    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "k8s", "rbac.yaml")) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    (role,) = [d for d in docs if d["kind"] == "Role"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert not any(r == "secrets" for _, r in granted)
    assert not any({"update", "patch"} & verbs for verbs in granted.values())
    rendered = render(capsys, "-f", values_file)
    for obj in rendered:
        group = obj["apiVersion"].rpartition("/")[0]
        plural = kube.PLURALS[(obj["apiVersion"], obj["kind"])]
        assert {"get", "list", "create", "delete"} <= granted[(group, plural)], obj["kind"]
    for resource in ("pods", "pods/log", "events"):
        assert {"get", "list"} <= granted[("", resource)]
