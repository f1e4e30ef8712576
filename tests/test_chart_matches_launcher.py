"""One truth: `python -m launcher sweep --backend kubernetes --dry-run` and `helm template` of
charts/inception-finetune make the same objects for the same inputs, with helm 3 and helm 4.

Both are rendered for the value sets of tests/test_chart.py (GPUs with every default; CPU-only
with tolerations and node selectors; Kueue, a PodMonitor and a Secret-mounted key; several
workers per run), given once as one values file to both, and once as command-line flags
(launcher flags such as --workers; helm --set).
The YAML is parsed and compared as data, object by object. What may differ, and only that:

- the `app.kubernetes.io/managed-by` label (Helm / inception-finetune-launcher), on objects
  and pod templates: it says who manages the object;
- the `helm.sh/chart` label (chart name and version), which helm adds to object metadata;
- the `helm test` hook Pod (annotation helm.sh/hook: test), which only the chart has.

`launcher tune --backend kubernetes --dry-run` and the chart with tuner.enabled are compared the
same way (TUNER_SETS): one Job each, the tuner. Its FINETUNE_VALUES (the values its pod renders
the stages with, as JSON) is compared as data, less nulls: null means "unset" to both, and
helm 3 keeps values.yaml's nulls where helm 4 and the launcher drop them. The chart's RBAC
objects (tuner.rbac.create) have no launcher twin; their rules must be k8s/rbac.yaml's.
"""

from __future__ import annotations

import difflib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_chart import (
    KUBE_MINORS,
    RELEASE,
    REQUIRED,
    ROOT,
    VALUE_SETS,
    helm_path,
    is_hook,
    render,
    restricted_violations,
    run_helm,
    validate_objects,
)
from tests.test_chart import helm as helm  # noqa: F401 - the fixture: helm 3 and helm 4

MAY_DIFFER_LABELS = ("app.kubernetes.io/managed-by", "helm.sh/chart")
VALUES_ENV = "FINETUNE_VALUES"


def launcher_objects(*args: str, command: str = "sweep") -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "launcher", command, "--backend", "kubernetes", "--dry-run", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, f"launcher --dry-run failed: {proc.stderr.strip()}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def comparable(objs: list[dict]) -> dict[str, Any]:
    """Objects by kind/name, less what may differ (see the module's docstring)."""
    out = {}
    for obj in objs:
        if is_hook(obj):
            continue
        obj = json.loads(json.dumps(obj))
        for labels in (
            obj["metadata"].get("labels", {}),
            obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}),
        ):
            for key in MAY_DIFFER_LABELS:
                labels.pop(key, None)
        for c in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for env in c.get("env", []):
                if env["name"] == VALUES_ENV:
                    env["value"] = _without_nulls(json.loads(env["value"]))
        out[f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    return out


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def assert_same(launcher: list[dict], chart: list[dict]) -> None:
    ours, theirs = comparable(launcher), comparable(chart)
    assert sorted(ours) == sorted(theirs), "the launcher and the chart make different objects"
    for name in ours:
        if ours[name] != theirs[name]:
            a = yaml.safe_dump(ours[name], sort_keys=True).splitlines()
            b = yaml.safe_dump(theirs[name], sort_keys=True).splitlines()
            diff = "\n".join(difflib.unified_diff(a, b, "launcher", "helm", lineterm=""))
            pytest.fail(f"{name} differs between the launcher and the chart:\n{diff}")


def write_values(tmp_path: Path, values: dict[str, Any]) -> Path:
    # PyYAML's dump spells 1e-05 as 1.0e-05, a float to PyYAML (the launcher) and to helm.
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_same_objects_from_one_values_file(helm: str, value_set: str, tmp_path: Path) -> None:  # noqa: F811
    values = VALUE_SETS[value_set]
    path = write_values(tmp_path, values)
    launcher = launcher_objects("-f", str(path))
    proc = run_helm(helm, "template", RELEASE, "CHART", "-f", str(path))
    assert proc.returncode == 0, proc.stderr
    chart = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert len(launcher) >= 4
    assert_same(launcher, chart)


def _from_flags(
    helm: str, tmp_path: Path, trainer_flags: list[str], workers: int | None = None
) -> tuple[list, list]:
    """The CPU set, its sweep inputs given as flags: `python -m launcher sweep --data ...
    --lrs 0.05,0.0001,1e-05 --gpus 0 [--workers N] FLAGS` and `helm template --set ...
    [trainer.workers=N] trainerArgs=FLAGS`."""
    values = dict(VALUE_SETS["cpu"])
    given = ("data", "out", "lrs", "name", "trainerArgs")
    rest = {k: v for k, v in values.items() if k not in given}
    rest["trainer"] = {k: v for k, v in rest["trainer"].items() if k != "gpus"}
    path = write_values(tmp_path, rest)
    lrs = ",".join(repr(lr) for lr in values["lrs"])
    launcher_workers = ["--workers", str(workers)] if workers else []
    helm_workers = ["--set", f"trainer.workers={workers}"] if workers else []
    launcher = launcher_objects(
        "--data", values["data"], "--out", values["out"], "--name", values["name"],
        "--lrs", lrs, "--gpus", "0", *launcher_workers, *trainer_flags, "-f", str(path),
    )  # fmt: skip
    chart = render(
        helm, rest, "--set", f"data={values['data']},out={values['out']},name={values['name']}",
        "--set", f"lrs={{{lrs}}}", "--set", "trainer.gpus=0", *helm_workers,
        "--set-json", f"trainerArgs={json.dumps(trainer_flags)}",
    )  # fmt: skip
    return launcher, chart


def test_same_objects_from_command_line_flags(helm: str, tmp_path: Path) -> None:  # noqa: F811
    """Trainer flags given to the launcher in its own canonical order (launcher.trainer_flags'
    table: --steps, --image-size, ..., --batch-size) and as helm's trainerArgs."""
    flags = ["--steps", "200", "--image-size", "160", "--batch-size", "16"]
    assert_same(*_from_flags(helm, tmp_path, flags))


def test_same_objects_from_command_line_flags_in_any_order(helm: str, tmp_path: Path) -> None:  # noqa: F811
    flags = ["--batch-size", "16", "--steps", "200", "--image-size", "160"]
    assert_same(*_from_flags(helm, tmp_path, flags))


def test_same_objects_with_several_workers_from_flags(helm: str, tmp_path: Path) -> None:  # noqa: F811
    """`--workers 2` and `--set trainer.workers=2`: per lr a headless Service and an Indexed
    Job of two pods, the same from both."""
    launcher, chart = _from_flags(helm, tmp_path, ["--steps", "200"], workers=2)
    jobs = [o for o in launcher if o["kind"] == "Job"]
    services = [o["metadata"]["name"] for o in launcher if o["kind"] == "Service"]
    assert [j["spec"]["completions"] for j in jobs] == [2, 2, 2]
    assert services == [j["metadata"]["name"] for j in jobs]  # no TensorBoard in this set
    assert_same(launcher, chart)
    with pytest.raises(pytest.fail.Exception, match=r"Job/cpu-sweep-lr-0-05 differs"):
        assert_same(launcher, _from_flags(helm, tmp_path, ["--steps", "200"], workers=3)[1])


def test_the_comparison_has_teeth(helm: str, tmp_path: Path) -> None:  # noqa: F811
    """A difference outside the allowed ones is reported, naming the object."""
    path = write_values(tmp_path, VALUE_SETS["defaults"])
    launcher = launcher_objects("-f", str(path))
    chart = render(helm, {**VALUE_SETS["defaults"], "trainer": {"backoffLimit": 4}})
    with pytest.raises(pytest.fail.Exception, match=r"Job/flowers-lr-lr-0-1 differs"):
        assert_same(launcher, chart)


# ------------------------------------------------------------------ launcher tune

TUNER = {"data": REQUIRED["data"], "out": REQUIRED["out"]}
TUNER_SETS: dict[str, dict[str, Any]] = {
    # Every default: no lrs (the tuner chooses them), asha for every stage.
    "tuner-defaults": {**TUNER, "tuner": {"enabled": True}},
    # A CPU cluster's set with its lrs (ignored), median early stopping with a grace.
    "tuner-cpu": {
        **VALUE_SETS["cpu"],
        "earlyStop": {"rule": "median", "grace": 20, "patience": 60},
        "tuner": {
            "enabled": True,
            "budgetSteps": 5000,
            "threshold": 0.005,
            "maxRounds": 2,
            "pollInterval": 12.5,
            "backoffLimit": 1,
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        },
    },  # fmt: skip
    # Kueue (the tuner is not queued), a key file from a Secret, the emulator; its own RBAC.
    "tuner-kueue-secret-rbac": {
        **{k: v for k, v in VALUE_SETS["kueue-monitor-secret"].items() if k != "lrs"},
        "tuner": {"enabled": True, "serviceAccountName": "tuner", "rbac": {"create": True}},
    },
}


def _tuner_objects(helm: str, values: dict[str, Any], tmp_path: Path) -> tuple[list, list]:  # noqa: F811
    """(the launcher's objects, the chart's objects less its RBAC ones) for one values file."""
    path = write_values(tmp_path, values)
    launcher = launcher_objects("-f", str(path), command="tune")
    chart = render(helm, values)
    rbac = ("ServiceAccount", "Role", "RoleBinding")
    return launcher, [o for o in chart if o["kind"] not in rbac]


@pytest.mark.parametrize("value_set", list(TUNER_SETS))
def test_the_same_tuner_job_from_one_values_file(
    helm: str,  # noqa: F811
    value_set: str,
    tmp_path: Path,
) -> None:
    launcher, chart = _tuner_objects(helm, TUNER_SETS[value_set], tmp_path)
    assert [o["kind"] for o in launcher] == ["Job"]
    assert_same(launcher, chart)
    (job,) = launcher
    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is True
    assert "suspend" not in job["spec"]  # not queued, with Kueue either


def test_the_same_tuner_job_from_command_line_flags(helm: str, tmp_path: Path) -> None:  # noqa: F811
    """The tune flags and the convenience flags given to the launcher, --set to helm: the same
    Job, FINETUNE_VALUES included (the flags travel as the values they stand for)."""
    values = TUNER_SETS["tuner-cpu"]
    given = ("data", "out", "lrs", "name", "trainerArgs", "earlyStop", "tuner")
    rest = {k: v for k, v in values.items() if k not in given}
    rest["trainer"] = {k: v for k, v in rest["trainer"].items() if k != "gpus"}
    path = write_values(tmp_path, rest)
    launcher = launcher_objects(
        "--data", values["data"], "--out", values["out"], "--name", values["name"],
        "--gpus", "0", "--early-stop", "median", "--grace", "20", "--patience", "60",
        "--budget-steps", "5000",
        "--threshold", "0.005", "--max-rounds", "2", "--poll-interval", "12.5",
        "--steps", "200", "--image-size", "160", "--batch-size", "16", "-f", str(path),
        command="tune",
    )  # fmt: skip
    chart = render(
        helm, rest, "--set", f"data={values['data']},out={values['out']},name={values['name']}",
        "--set", "trainer.gpus=0,earlyStop.rule=median,earlyStop.grace=20",
        "--set", "earlyStop.patience=60",
        "--set", "tuner.enabled=true,tuner.budgetSteps=5000,tuner.maxRounds=2",
        # --set spells 0.005 as a string, which the schema refuses (as for evaluator.interval)
        "--set-json", "tuner.threshold=0.005", "--set-json", "tuner.pollInterval=12.5",
        "--set-json", 'trainerArgs=["--steps","200","--image-size","160","--batch-size","16"]',
    )  # fmt: skip
    assert_same(launcher, [o for o in chart if o["kind"] == "Job"])


def test_the_tuner_comparison_has_teeth(helm: str, tmp_path: Path) -> None:  # noqa: F811
    """A value that only the chart's FINETUNE_VALUES carries is a difference."""
    launcher, _ = _tuner_objects(helm, TUNER_SETS["tuner-defaults"], tmp_path)
    chart = render(helm, {**TUNER_SETS["tuner-defaults"], "trainer": {"gpus": 2}})
    with pytest.raises(pytest.fail.Exception, match=r"Job/flowers-lr-tuner differs"):
        assert_same(launcher, chart)


@pytest.mark.parametrize("minor", KUBE_MINORS)
def test_the_tuner_objects_are_valid_for_the_claimed_kubernetes_versions(
    helm: str,  # noqa: F811
    minor: str,
) -> None:
    for values in TUNER_SETS.values():
        objs = render(helm, values, "--kube-version", f"{minor}.0")
        validate_objects(objs, minor)


def test_the_charts_tuner_rbac_is_k8s_rbac_yaml(helm: str) -> None:  # noqa: F811
    """tuner.rbac.create: the ServiceAccount the tuner Job runs as, bound to a Role with exactly
    k8s/rbac.yaml's rules (the launcher's rights), in the release's namespace."""
    values = TUNER_SETS["tuner-kueue-secret-rbac"]
    objs = render(helm, values, "--namespace", "ml")
    by_kind = {o["kind"]: o for o in objs}
    rbac = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "k8s" / "rbac.yaml").read_text())}
    assert by_kind["Role"]["rules"] == rbac["Role"]["rules"]
    assert by_kind["ServiceAccount"]["metadata"]["name"] == "tuner"
    binding = by_kind["RoleBinding"]
    assert binding["roleRef"] == {**rbac["RoleBinding"]["roleRef"], "name": "tuner"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tuner", "namespace": "ml"}]
    assert by_kind["Job"]["spec"]["template"]["spec"]["serviceAccountName"] == "tuner"
    for kind in ("ServiceAccount", "Role", "RoleBinding"):  # the release's, not the sweep's
        assert "app.kubernetes.io/instance" not in by_kind[kind]["metadata"]["labels"]
    assert "annotations" not in by_kind["ServiceAccount"]["metadata"]
    identity = {"iam.gke.io/gcp-service-account": "tuner@p.iam.gserviceaccount.com"}
    tuner = {**values["tuner"], "rbac": {"create": True, "annotations": identity}}
    annotated = render(helm, {**values, "tuner": tuner})
    [account] = [o for o in annotated if o["kind"] == "ServiceAccount"]
    assert account["metadata"]["annotations"] == identity  # workload identity for the bucket
    without = render(helm, {**values, "tuner": {"enabled": True, "serviceAccountName": "tuner"}})
    assert [o["kind"] for o in without if not is_hook(o)] == ["Job"]


def test_the_chart_needs_lrs_unless_the_tuner_chooses_them(helm: str) -> None:  # noqa: F811
    proc = run_helm(
        helm, "template", RELEASE, "CHART", values={**TUNER, "tuner": {"enabled": False}}
    )
    assert proc.returncode != 0
    assert re.search(r"lrs is required|missing propert[^\n]*'lrs'", proc.stderr), proc.stderr
    proc = run_helm(helm, "lint", "--strict", "CHART", values=TUNER_SETS["tuner-defaults"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_tuner_jobs_command_parses_with_the_launchers_own_parser(helm: str) -> None:  # noqa: F811
    from launcher.cli import tune_parser

    (job,) = [o for o in render(helm, TUNER_SETS["tuner-cpu"]) if o["kind"] == "Job"]
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["python", "-m", "launcher", "tune"]
    args = tune_parser().parse_args(c["args"])
    assert (args.backend, args.in_cluster, args.name) == ("kubernetes", True, "cpu-sweep")
    assert (args.early_stop, args.grace, args.eta) == ("median", 20, 3)
    assert (args.budget_steps, args.threshold, args.max_rounds, args.poll_interval) == (
        5000, 0.005, 2, 12.5,
    )  # fmt: skip
    assert c["args"][-6:] == VALUE_SETS["cpu"]["trainerArgs"]


def test_notes_say_how_to_follow_the_tuner_and_remove_what_it_made() -> None:
    # helm 3's install --dry-run needs a cluster to ask its version; helm 4's does not.
    proc = run_helm(helm_path("helm4"), "install", RELEASE, "CHART", "--dry-run=client",
                    "--namespace", "ml", values=TUNER_SETS["tuner-defaults"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n ml logs -f job/{RELEASE}-tuner" in notes
    assert (
        f"python -m launcher status --sweep {REQUIRED['out']} --backend kubernetes -n ml" in notes
    )
    assert f"python -m launcher delete --sweep {RELEASE} -n ml" in notes
    assert "kubectl apply -f k8s/rbac.yaml" in notes
