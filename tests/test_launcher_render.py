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
        # values.yaml's uid, high so that it is no host user's (the images' USER is the same).
        assert security["runAsUser"] == security["runAsGroup"] == security["fsGroup"] == 10001
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


def test_trainer_flags_are_checked_with_the_trainers_own_validators() -> None:
    """One owner of every bound: the launcher's check of a flag is the trainer's own converter
    (common.args, common.trainer_args), so a sweep never records a value its runs refuse."""
    config = pytest.importorskip("trainer.config")
    types = {
        option: action.type
        for action in config.build_parser()._actions
        for option in action.option_strings
    }
    for flag, kind in trainer_flags.FLAGS.items():
        if callable(kind) and flag != "--weights":  # the trainer also checks the file itself
            assert kind is types[flag], flag


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


def test_rbac_grants_what_the_launcher_uses_and_no_more(capsys, values_file, tmp_path) -> None:  # noqa: ANN001
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
    # Exactly what the launcher calls: get + create (apply), list + delete (delete), for every
    # kind it renders (a PodMonitor too), and a list of pods (status); no watch, logs, events.
    needed: dict[tuple[str, str], set[str]] = {("", "pods"): {"list"}}
    monitor = tmp_path / "monitor.yaml"
    monitor.write_text(yaml.safe_dump({"podMonitor": {"enabled": True}}))
    for obj in render(capsys, "-f", values_file) + render(capsys, "-f", str(monitor)):
        group = obj["apiVersion"].rpartition("/")[0]
        plural = kube.PLURALS[(obj["apiVersion"], obj["kind"])]
        needed[(group, plural)] = {"get", "list", "create", "delete"}
    assert granted == needed


# ---------------------------------------------------------------- several workers per run


@pytest.mark.parametrize("version", VERSIONS)
def test_several_workers_are_schema_valid(capsys, values_file, version) -> None:  # noqa: ANN001
    for extra in (["--workers", "2"], ["-f", values_file, "--gpus", "0", "--workers", "256"]):
        objs = render(capsys, *extra)
        assert len(kinds(objs, "Service")) == 4  # TensorBoard, one headless per run
        for obj in objs:
            if obj["kind"] != "PodMonitor":
                kubernetes_validate.validate(obj, version, strict=True)


def test_several_workers_objects(capsys) -> None:  # noqa: ANN001
    """Each run: its headless Service right before its Indexed Job (apply order), worker i at
    <job>-<i>.<job>:2222, the failure rules of a single trainer, retries per worker."""
    objs = render(capsys, "--workers", "3", "--steps", "100")
    assert [o["kind"] for o in objs] == [
        "ServiceAccount", "Service", "Deployment", "Deployment",
        "Service", "Job", "Service", "Job", "Service", "Job",
    ]  # fmt: skip
    single = kinds(render(capsys, "--steps", "100"), "Job")[1]
    job = kinds(objs, "Job")[1]
    name = job["metadata"]["name"]
    service = objs[objs.index(job) - 1]
    assert service["metadata"]["name"] == name == "flowers-lr-lr-0-01"
    assert service["metadata"]["labels"] == job["metadata"]["labels"]
    assert service["spec"] == {
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": {
            "app.kubernetes.io/name": "inception-finetune",
            "app.kubernetes.io/instance": "flowers-lr",
            "app.kubernetes.io/component": "trainer",
            "inception-finetune/run": "lr-0.01",
        },
        "ports": [
            {"name": "collective", "port": 2222, "targetPort": "collective", "protocol": "TCP"}
        ],
    }
    spec = job["spec"]
    assert {k: spec[k] for k in ("completionMode", "completions", "parallelism")} == {
        "completionMode": "Indexed", "completions": 3, "parallelism": 3,
    }  # fmt: skip
    assert (spec["backoffLimit"], spec["backoffLimitPerIndex"], spec["maxFailedIndexes"]) == (
        9,
        3,
        0,
    )
    assert spec["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    assert spec["podFailurePolicy"] == single["spec"]["podFailurePolicy"]
    assert spec["podReplacementPolicy"] == "Failed"
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == name
    trainer = pod["containers"][0]
    assert trainer["args"][10:] == [
        "--workers", "3", "--worker-hosts", f"{name}-{{index}}.{name}:2222", "--steps", "100",
    ]  # fmt: skip
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 1  # per worker pod
    assert trainer["ports"][1] == {"name": "collective", "containerPort": 2222, "protocol": "TCP"}
    # The rest of the pod is a single trainer's.
    plain = single["spec"]["template"]["spec"]
    assert {k: v for k, v in pod.items() if k not in ("subdomain", "containers")} == {
        k: v for k, v in plain.items() if k != "containers"
    }
    assert pod["initContainers"] == plain["initContainers"]  # record-sweep: no worker flags


def test_worker_flags_are_what_the_trainer_reads(capsys) -> None:  # noqa: ANN001
    """The rendered trainer arguments, parsed by the trainer's own parser in the pod of each
    index (Kubernetes sets JOB_COMPLETION_INDEX): N workers, their addresses, this one's index."""
    config = pytest.importorskip("trainer.config")
    job = kinds(render(capsys, "--workers", "2"), "Job")[0]
    name = job["metadata"]["name"]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    for index in range(2):
        parsed, _ = config.parse_args(args, {"JOB_COMPLETION_INDEX": str(index)})
        assert (parsed.workers, parsed.worker_index) == (2, index)
        assert parsed.worker_addresses() == [f"{name}-0.{name}:2222", f"{name}-1.{name}:2222"]
        assert parsed.tf_config() == {
            "cluster": {"worker": parsed.worker_addresses()},
            "task": {"type": "worker", "index": index},
        }


# The trainer's several-workers flags (trainer/config.py): each bad combination is one sentence.
BAD_WORKER_FLAGS = [
    (["--workers", "0"], {}, "from 1 to 256"),
    (["--workers", "257"], {}, "from 1 to 256"),
    (["--workers", "two"], {}, "expected a whole number"),
    (["--workers", "2"], {}, "--workers 2 needs --worker-hosts"),
    (["--worker-hosts", "a:1,b:2"], {}, "only applies with --workers 2 or more"),
    (["--worker-index", "1"], {}, "--worker-index 1 needs --workers 2 or more"),
    (["--workers", "3", "--worker-hosts", "a:1,b:2"], {}, "has 2 address(es) for --workers 3"),
    (["--workers", "2", "--worker-hosts", "a:1"], {}, "has 1 address(es) for --workers 2"),
    (["--workers", "2", "--worker-hosts", "a:1,b:99999"], {}, "'b:99999' is not host:port"),
    (["--workers", "2", "--worker-hosts", "a,b:2"], {}, "'a' is not host:port"),
    (["--workers", "2", "--worker-hosts", "a:1,a:1"], {}, "names a:1 twice"),
    (["--workers", "2", "--worker-hosts", "w-{index}:1,x:2"], {}, "mixes a list with {index}"),
    (["--workers", "2", "--worker-hosts", "w-{index}-{index}:1"], {}, "{index} once"),
    (["--workers", "2", "--worker-hosts", "a:1,b:2", "--worker-index", "2"], {},
     "--worker-index 2 is not a worker of --workers 2 (0 to 1)"),
    (["--workers", "2", "--worker-hosts", "w-{index}:1"], {"JOB_COMPLETION_INDEX": "2"},
     "JOB_COMPLETION_INDEX=2 (this pod's index) is not a worker of --workers 2"),
    (["--workers", "2", "--worker-hosts", "w-{index}:1"], {"JOB_COMPLETION_INDEX": "x"},
     "is not a whole number"),
    (["--workers", "2", "--worker-hosts", "w-{index}:1"], {"TF_CONFIG": "{}"},
     "TF_CONFIG is set in the environment and --workers 2 and --worker-hosts given"),
    (["--worker-index", "0"], {"TF_CONFIG": "{}"}, "TF_CONFIG is set"),
]  # fmt: skip


@pytest.mark.parametrize(("flags", "env", "message"), BAD_WORKER_FLAGS)
def test_trainer_refuses_bad_worker_flags_in_one_sentence(capsys, flags, env, message) -> None:  # noqa: ANN001
    config = pytest.importorskip("trainer.config")
    with pytest.raises(SystemExit) as exc:
        config.parse_args(["--data", "d", "--run-dir", "r", *flags], env)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_trainer_worker_flags_that_hold() -> None:
    config = pytest.importorskip("trainer.config")
    base = ["--data", "d", "--run-dir", "r"]
    one, _ = config.parse_args(base, {"JOB_COMPLETION_INDEX": "7"})  # one worker: not read
    assert (one.workers, one.worker_index, one.worker_addresses(), one.tf_config()) == (
        1, 0, [], None,
    )  # fmt: skip
    listed, given = config.parse_args(
        [*base, "--workers", "2", "--worker-hosts", "127.0.0.1:5001, [::1]:5002",
         "--worker-index", "1"], {"JOB_COMPLETION_INDEX": "0"},
    )  # fmt: skip
    assert listed.worker_addresses() == ["127.0.0.1:5001", "[::1]:5002"]
    assert listed.worker_index == 1 and {"workers", "worker_hosts", "worker_index"} <= given
    alone, _ = config.parse_args(
        base, {"TF_CONFIG": '{"cluster": {}}', "JOB_COMPLETION_INDEX": "3"}
    )
    assert (alone.workers, alone.worker_index) == (1, 0)  # the trainer reads TF_CONFIG itself
    hparams = set(config.hparam_names())
    assert not hparams & {"workers", "worker_hosts", "worker_index"}  # not hyperparameters


def test_bad_worker_counts_create_nothing(capsys, tmp_path) -> None:  # noqa: ANN001
    """--workers and trainer.workers out of bounds, and a worker hostname that cannot be a pod's:
    one sentence each, before anything is rendered."""
    values = tmp_path / "v.yaml"
    cases = [
        (["--workers", "0"], "from 1 to 256"),
        (["--workers", "1.5"], "expected a whole number"),
        (["--name", "a" * 40, "--lrs", "1.234567891234e-05", "--workers", "2"],
         "with 2 workers, the hostname of the last one, "
         "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-lr-1-234567891234e-05-1', would be 64"),
        (["-f", str(values)], "v.yaml: trainer.workers: 300 is greater than the maximum of 256"),
    ]  # fmt: skip
    values.write_text(yaml.safe_dump({"trainer": {"workers": 300}}))
    for extra, message in cases:
        try:
            code = run_main(main, [*BASE, "--lrs", "0.1", *extra])
        except SystemExit as exc:  # argparse's one-line errors
            code = exc.code
        out, err = capsys.readouterr()
        assert code == 2
        assert out == "" and err.count("\n") == 1 and message in err, err
