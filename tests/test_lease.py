"""One writer per directory: the lease, on a local folder and on GCS (the real emulator)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from common import storage
from common.lease import Lease, LeaseHeld, LeaseLost


def test_conditional_write_has_exactly_one_winner(bucket_root: str) -> None:
    uri = storage.join(bucket_root, "cas.json")
    assert storage.read_versioned(uri) is None
    first = storage.write_if_version(uri, b"a", None)
    assert first is not None
    assert storage.write_if_version(uri, b"b", None) is None  # it exists now
    assert storage.write_if_version(uri, b"c", first) is not None
    assert storage.write_if_version(uri, b"d", first) is None  # stale version
    assert storage.read_bytes(uri) == b"c"


def test_conditional_write_race(bucket_root: str) -> None:
    uri = storage.join(bucket_root, "race.json")
    wins = []

    def take(i: int) -> None:
        if storage.write_if_version(uri, f"{i}".encode(), None) is not None:
            wins.append(i)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert storage.read_bytes(uri) == f"{wins[0]}".encode()


def test_second_holder_is_refused_naming_the_first(bucket_root: str) -> None:
    uri = storage.join(bucket_root, "run", "trainer.lease.json")
    first = Lease(uri, role="trainer", ttl_s=2.0)
    first.acquire()
    try:
        second = Lease(uri, role="trainer", ttl_s=2.0)
        started = time.monotonic()
        with pytest.raises(LeaseHeld, match=r"another trainer holds .* pid \d+, since"):
            second.acquire(wait_s=10)
        # It saw the lease renewed (every ttl/4) and gave up without waiting the whole 10 s.
        assert time.monotonic() - started < 5
    finally:
        first.release()


def test_released_lease_is_taken_at_once(bucket_root: str) -> None:
    uri = storage.join(bucket_root, "lease.json")
    with Lease(uri, role="evaluator", ttl_s=30) as first:
        first.acquire()
    second = Lease(uri, role="evaluator", ttl_s=30)
    started = time.monotonic()
    second.acquire(wait_s=0)
    assert time.monotonic() - started < 2
    second.check()
    second.release()


def _abandoned_lease(uri: str, *, host: str, pid: int, renewed: float) -> None:
    record = {"role": "trainer", "token": "dead", "host": host, "pid": pid, "since": "then",
              "renewed": renewed, "ttl_s": 2.0}  # fmt: skip
    storage.write_bytes(uri, json.dumps(record).encode())


def test_stale_lease_of_a_killed_holder_expires(bucket_root: str) -> None:
    """A SIGKILLed pod elsewhere leaves a lease that stops changing: taken after the ttl."""
    uri = storage.join(bucket_root, "lease.json")
    _abandoned_lease(uri, host="some-other-pod", pid=1, renewed=time.time())
    lease = Lease(uri, role="trainer", ttl_s=2.0)
    started = time.monotonic()
    lease.acquire(wait_s=10)
    waited = time.monotonic() - started
    assert 1.9 <= waited < 6
    lease.check()
    lease.release()


def test_lease_of_a_dead_local_process_is_taken_at_once(tmp_path) -> None:  # noqa: ANN001
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    uri = str(tmp_path / "lease.json")
    import socket

    _abandoned_lease(uri, host=socket.gethostname(), pid=int(dead.stdout), renewed=time.time())
    lease = Lease(uri, role="trainer", ttl_s=60)
    started = time.monotonic()
    lease.acquire(wait_s=0)
    assert time.monotonic() - started < 1
    lease.release()


def test_holder_that_lost_its_lease_is_told(bucket_root: str) -> None:
    uri = storage.join(bucket_root, "lease.json")
    first = Lease(uri, role="trainer", ttl_s=60)
    first.acquire()
    first._stop.set()  # a holder frozen for longer than the ttl: it no longer renews
    _abandoned_lease(uri, host="other", pid=7, renewed=time.time() - 1000)
    second = Lease(uri, role="trainer", ttl_s=60)
    second.acquire(wait_s=0)
    with pytest.raises(LeaseLost, match="lost its lease .* host other|lost its lease"):
        first.check()
    with pytest.raises(LeaseLost):
        first.renew()
    second.check()
    second.release()


@pytest.mark.parametrize("uri", ["s3://bucket/run", "http://example.com/x", "HTTPS://a/b"])
def test_other_schemes_are_refused_in_one_sentence(uri: str) -> None:
    with pytest.raises(storage.StorageError, match=r"is not supported; use a local path or gs://"):
        storage.normalize(uri)
    with pytest.raises(storage.StorageError):
        storage.write_text(storage.join(uri, "x"), "y")


# ---------------------------------------------------------------- answers lost on the network


@pytest.fixture
def faulty(gcs, monkeypatch):  # noqa: ANN001, ANN201
    """common.storage through a fault-injecting proxy in front of the real emulator."""
    from tests.faulty_gcs import FaultyGcs

    with FaultyGcs(gcs.url) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        yield proxy


def _is_upload(method: str, target: str) -> bool:
    return method == "POST" and target.startswith("/upload/")


@pytest.mark.parametrize("role", ["trainer", "evaluator"])
def test_renewal_whose_answer_is_lost_keeps_the_lease(gcs, faulty, role: str) -> None:  # noqa: ANN001
    """The renewal lands, its answer is lost, the client's retry fails its precondition
    against that very renewal: the holder finds its own token and still holds the lease."""
    uri = gcs.make_bucket() + "/run/lease.json"
    lease = Lease(uri, role=role, ttl_s=60)
    lease.acquire(wait_s=0)
    faulty.lose_replies(_is_upload)
    lease.renew()
    assert faulty.lost, "the fault was never injected"
    lease.check()
    lease.renew()  # and it goes on renewing from the version it found
    lease.release()
    assert json.loads(storage.read_bytes(uri))["released"] is True


def test_acquisition_whose_answer_is_lost_holds_the_lease(gcs, faulty) -> None:  # noqa: ANN001
    uri = gcs.make_bucket() + "/run/lease.json"
    faulty.lose_replies(_is_upload)
    lease = Lease(uri, role="trainer", ttl_s=60)
    started = time.monotonic()
    lease.acquire(wait_s=5)
    assert time.monotonic() - started < 5  # it did not wait for "another" holder to expire
    assert faulty.lost
    lease.check()
    lease.release()


def test_each_acquisition_has_its_own_token(tmp_path) -> None:  # noqa: ANN001
    """Host and pid are the same for two acquisitions in one process; the token is not."""
    lease = Lease(str(tmp_path / "lease.json"), role="trainer", ttl_s=60)
    lease.acquire(wait_s=0)
    first = lease.token
    lease.release()
    lease.acquire(wait_s=0)
    assert lease.token != first
    lease.release()
