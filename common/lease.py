"""One writer per directory: a small lease object, created only if absent and renewed while held.

Two trainers on one run directory (a replacement pod beside a terminating one, the same command
started twice) would overwrite each other's checkpoints; two evaluators on one sweep (a rolling
update) would score everything twice. A lease file settles who writes:

- It is taken by a compare-and-swap write (GCS: generation precondition; local: an exclusive
  lock), so of two processes starting together exactly one wins.
- The holder renews it every `ttl / 4` seconds from a background thread. A lease not renewed
  for `ttl` seconds is stale (a SIGKILLed pod leaves one behind) and may be taken over.
  Staleness is judged by the waiter's own clock (the lease did not change while it watched),
  so clocks that disagree between machines cannot end a live lease early; a lease whose
  recorded renewal is far in the past (`2 * ttl` by the wall clock), or whose holder is a dead
  process on this very host, is taken at once.
- The holder calls check() before each write that matters (a checkpoint, an export); a holder
  that lost its lease stops without writing.
- Each acquisition writes a fresh random token. A write whose answer is lost on the network
  is retried by the storage client and then fails its precondition against its own first
  attempt; so after a failed precondition the holder reads the lease, and if its own token is
  there it still holds the lease (at the version it reads), rather than taking itself for
  another holder. Host and pid cannot tell this apart: they are the same for both attempts.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from common import storage
from common.cli import UserError

log = logging.getLogger("lease")

DEFAULT_TTL_S = 90.0


class LeaseHeld(UserError):
    """Another live process holds the lease."""


class LeaseLost(UserError):
    """The lease was taken over by another process while this one held it."""


def _host() -> str:
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_gone(holder: dict[str, Any]) -> bool:
    """The holder is a process on this very host that no longer runs: a SIGKILLed holder
    leaves a lease that looks fresh for up to its ttl, and its pid settles that at once."""
    pid = holder.get("pid")
    return (
        holder.get("host") == _host()
        and isinstance(pid, int)
        and pid > 0
        and pid != os.getpid()
        and not _pid_alive(pid)
    )


def describe(holder: dict[str, Any]) -> str:
    """`host h, pid 12, since 2026-...`: who holds a lease, for a sentence."""
    host, pid, since = (holder.get(k, "?") for k in ("host", "pid", "since"))
    return f"host {host}, pid {pid}, since {since}"


class Lease:
    def __init__(self, uri: str, *, role: str, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.uri = uri
        self.role = role  # "trainer", "evaluator": for the messages
        self.ttl_s = ttl_s
        self.token = uuid.uuid4().hex
        self.since = ""
        self._version: str | None = None
        self._took_over = False  # this acquisition replaced an earlier holder's lease
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ taking

    def acquire(self, wait_s: float | None = None) -> bool:
        """Take the lease, waiting up to wait_s (default: ttl) for a stale one to expire.

        Returns True when an earlier holder's lease was there (released, stale or of a dead
        process): what it wrote may have changed since the caller last looked.
        """
        wait_s = self.ttl_s + 5.0 if wait_s is None else wait_s
        if self._version is None:  # not held: a token of this acquisition's own
            self.token, self._took_over = uuid.uuid4().hex, False
        deadline = time.monotonic() + wait_s
        watched: tuple[str, float] | None = None  # (version, when first seen)
        while True:
            current = storage.read_versioned(self.uri)
            if current is None:
                if self._write(None):
                    return False
                continue
            data, version = current
            holder = _parse(data)
            if holder.get("token") == self.token:  # our own write, its answer lost
                self._hold(version)
                return bool(self._took_over)
            if self._free(holder, version, watched):
                self._took_over = True
                if self._write(version):
                    if not holder.get("released"):
                        log.info("took over a stale %s lease (%s)", self.role, describe(holder))
                    return True
                continue
            if watched is None or watched[0] != version:
                if watched is not None:  # renewed while we watched: its holder is alive
                    raise self._held(holder)
                watched = (version, time.monotonic())
            if time.monotonic() >= deadline:
                raise self._held(holder)
            time.sleep(min(2.0, max(0.05, self.ttl_s / 20)))

    def _free(self, holder: dict, version: str, watched: tuple[str, float] | None) -> bool:
        if holder.get("released"):
            return True
        if holder_gone(holder):
            return True  # no need to wait out its ttl
        renewed = holder.get("renewed")
        if isinstance(renewed, (int, float)) and time.time() - renewed > 2 * self.ttl_s:
            return True
        return (
            watched is not None
            and watched[0] == version
            and time.monotonic() - watched[1] >= self.ttl_s
        )

    def _held(self, holder: dict) -> LeaseHeld:
        return LeaseHeld(
            f"another {self.role} holds {self.uri} ({describe(holder)}); stop it first, or "
            f"start again {self.ttl_s:.0f} s after it died."
        )

    def _record(self) -> bytes:
        return json.dumps(
            {
                "role": self.role,
                "token": self.token,
                "host": _host(),
                "pid": os.getpid(),
                "since": self.since,
                "renewed": time.time(),
                "ttl_s": self.ttl_s,
            },
            indent=2,
        ).encode()

    def _write(self, version: str | None) -> bool:
        if not self.since:
            self.since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        new_version = storage.write_if_version(self.uri, self._record(), version)
        if new_version is None:
            return False
        self._hold(new_version)
        return True

    def _hold(self, version: str) -> None:
        self._version = version
        self._start_renewing()

    def _own_version(self) -> str | None:
        """The lease's version if it still carries this holder's token, else None.

        Asked after a conditional write failed: the write may have landed with its answer
        lost, and the storage client's retry then failed against it.
        """
        current = storage.read_versioned(self.uri)
        if current is None or _parse(current[0]).get("token") != self.token:
            return None
        return current[1]

    # ------------------------------------------------------------ holding

    def _start_renewing(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._renew_loop, name="lease", daemon=True)
            self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self.renew()
            except LeaseLost:
                return
            except Exception as exc:  # a network blip: try again next period
                log.warning("could not renew the %s lease %s: %s", self.role, self.uri, exc)

    def renew(self) -> None:
        with self._lock:
            if self._lost:
                raise LeaseLost(self._lost)
            new_version = storage.write_if_version(self.uri, self._record(), self._version)
            if new_version is None:
                new_version = self._own_version()  # renewed after all, its answer lost
            if new_version is not None:
                self._version = new_version
                return
            current = storage.read_versioned(self.uri)
            holder = _parse(current[0]) if current else {}
            self._lost = (
                f"this {self.role} lost its lease {self.uri} to another "
                f"({describe(holder)}); it stops without writing."
            )
            raise LeaseLost(self._lost)

    def check(self) -> None:
        """Raise LeaseLost unless this process still holds the lease (one small read)."""
        if self._lost:
            raise LeaseLost(self._lost)
        current = storage.read_versioned(self.uri)
        if current is None or _parse(current[0]).get("token") != self.token:
            holder = _parse(current[0]) if current else {}
            self._lost = (
                f"this {self.role} lost its lease {self.uri}"
                + (f" to another ({describe(holder)})" if holder else "")
                + "; it stops without writing."
            )
            raise LeaseLost(self._lost)

    def release(self) -> None:
        """Give the lease up at once (a released lease is free for the next process)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            if self._lost or self._version is None:
                return
            record = json.loads(self._record())
            record["released"] = True
            try:
                self._write_released(json.dumps(record).encode())
            except Exception as exc:  # the lease then expires by itself
                log.warning("could not release the %s lease %s: %s", self.role, self.uri, exc)
            self._version = None

    def _write_released(self, body: bytes) -> None:
        """Mark the lease released; once more if a lost answer left ours unreleased in place."""
        for _ in range(2):
            if storage.write_if_version(self.uri, body, self._version) is not None:
                return
            current = storage.read_versioned(self.uri)
            holder = _parse(current[0]) if current else {}
            if current is None or holder.get("token") != self.token or holder.get("released"):
                return  # released by the lost write, or someone else's now: nothing to undo
            self._version = current[1]

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _parse(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {}  # a torn or foreign file: treated as free only through staleness below
    return value if isinstance(value, dict) else {}
