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
"""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_chart import RELEASE, ROOT, VALUE_SETS, is_hook, render, run_helm
from tests.test_chart import helm as helm  # noqa: F401 - the fixture: helm 3 and helm 4

MAY_DIFFER_LABELS = ("app.kubernetes.io/managed-by", "helm.sh/chart")


def launcher_objects(*args: str) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "launcher", "sweep", "--backend", "kubernetes", "--dry-run", *args],
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
        out[f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    return out


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
