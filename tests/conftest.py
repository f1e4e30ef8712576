"""Shared fixtures. Keep each one documented: other test modules build on them.

GCS fixtures: `gcs` (the emulator, once per session), `gcs_bucket` (a fresh bucket per test),
`bucket_root` (one test over both a local folder and a gs:// prefix). See tests/gcs_emulator.py
for how google-cloud-storage and TensorFlow's own gs:// both reach the emulator.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.gcs_emulator import GcsEmulator


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


# The slowest modules (each test starts TensorFlow trainers, a minute or two): started first,
# so that the two workers do not end on one of them while the other idles.
SLOW_MODULES = {
    "tests.test_launcher_local", "tests.test_model", "tests.test_trainer_gcs",
    "tests.test_trainer_lease", "tests.test_trainer_replicas", "tests.test_trainer_resume",
    "tests.test_trainer_workers",
}  # fmt: skip


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (scripts/test.sh, --dist loadgroup): the tests that share a module
    fixture (a trained run, an image build: a minute or more) run on one worker, so that it is
    made once; every other test goes to whichever worker is free. Those groups and the slowest
    modules go first."""
    first = []
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else []
        if any(d.scope == "module" for group in defs for d in group):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
            first.append(item)
        elif item.module.__name__ in SLOW_MODULES:
            first.append(item)
    chosen = {id(item) for item in first}
    items[:] = first + [item for item in items if id(item) not in chosen]
