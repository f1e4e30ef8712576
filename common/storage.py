"""One small storage layer over local paths and gs:// URIs.

A "bucket" is a URI: a local path or `gs://bucket/prefix`. Writes are atomic from the
reader's side: a local file is written to a temporary sibling and renamed into place; a GCS
object is only visible once its upload finished. `STORAGE_EMULATOR_HOST` points the GCS
client at an emulator (anonymous credentials then).

TensorFlow code reads and writes URIs through tf.io.gfile instead; everything else comes here.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from common.cli import RetryableError, UserError, first_line

GCS_SCHEME = "gs://"
# Object uploads at or under this size are single requests that honour preconditions.
_SIMPLE_UPLOAD_MAX = 8 * 1024 * 1024
# How long check_writable_location keeps trying an unreachable endpoint.
_CHECK_DEADLINE_S = 3.0
# Every other GCS call is retried on transient errors (connection errors, 408, 429, 5xx,
# timeouts) with exponential backoff for at most this long, then fails with one sentence and
# exit code 1. Two minutes rides out a short outage; a bucket gone for good is said within
# about that long instead of hanging a trainer. FINETUNE_STORAGE_DEADLINE_S overrides it.
DEADLINE_ENV = "FINETUNE_STORAGE_DEADLINE_S"
DEFAULT_DEADLINE_S = 120.0
# One request's limits (connect, read between bytes): no single call waits longer than this
# for a server that accepted the connection and then went silent.
_CONNECT_TIMEOUT_S = 10.0
_READ_TIMEOUT_S = 60.0
# TensorFlow's own gs:// (checkpoints, summaries, tf.data, SavedModel) retries by its own
# settings: by default 10 retries up to 32 s apart, each request waiting up to minutes, which
# kept a trainer silent for more than 4.5 minutes inside one checkpoint save on a lost bucket.
# These bounds (set unless the environment already has them; read when TensorFlow first uses
# gs://) keep about 15 s of backoff over 6 attempts, enough for a blip, and make a lost bucket
# an error within about 20 s when the endpoint refuses connections (measured) and about 3
# minutes at worst, when every attempt waits out the idle timeout.
TENSORFLOW_GCS_BOUNDS = {
    "GCS_RETRY_CONFIG_MAX_RETRIES": "5",
    "GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": "500000",
    "GCS_RETRY_CONFIG_MAX_DELAY_TIME_US": "16000000",
    "GCS_REQUEST_CONNECTION_TIMEOUT_SECS": "20",
    "GCS_REQUEST_IDLE_TIMEOUT_SECS": "30",
    "GCS_METADATA_REQUEST_TIMEOUT_SECS": "30",
}


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class StorageError(UserError):
    """A storage operation failed in a way the user can act on."""


class StorageUnavailable(RetryableError):
    """The storage service kept failing transiently (an outage, a lost bucket): exit code 1."""


class DiskFull(RetryableError):
    """A local disk (or quota) is full. Exit code 1, not 2: once space is freed the same
    command succeeds, and a pod rescheduled onto another node may not meet the full disk, so a
    Kubernetes Job must not fail for good on it; the sentence says where, for the person."""


def deadline_s() -> float:
    """How long one storage call keeps retrying transient errors (FINETUNE_STORAGE_DEADLINE_S)."""
    text = os.environ.get(DEADLINE_ENV, "")
    try:
        value = float(text) if text else DEFAULT_DEADLINE_S
    except ValueError:
        value = DEFAULT_DEADLINE_S
    return value if value > 0 else DEFAULT_DEADLINE_S


def bound_tensorflow_gcs() -> None:
    """Bound TensorFlow's own gs:// retries and waits (TENSORFLOW_GCS_BOUNDS), unless set.

    Call it before TensorFlow first touches gs:// (the trainer and the evaluator call it first
    thing): TensorFlow reads these variables once.
    """
    for name, value in TENSORFLOW_GCS_BOUNDS.items():
        os.environ.setdefault(name, value)


def disk_full_error(exc: BaseException, where: str) -> DiskFull | None:
    """A DiskFull naming `where` when exc is a full disk or quota (an OSError's errno, or the
    OS's words in a TensorFlow error's message); None for anything else."""
    messages = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = exc.strerror or messages[0]
    else:
        reason = next((m for m in messages if m.lower() in str(exc).lower()), "")
    if not reason:
        return None
    return DiskFull(
        f"the disk is full ({reason.lower()}) writing {where}; free some space there "
        "(or use another location) and run the same command again."
    )


@contextlib.contextmanager
def _local_errors(path: str) -> Iterator[None]:
    """A full disk while writing a local file is one sentence naming it, not a traceback."""
    try:
        yield
    except OSError as exc:
        full = disk_full_error(exc, path)
        if full is None:
            raise
        raise full from exc


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_gcs(uri: str) -> bool:
    """True for gs://; a local path is False; any other scheme is refused here, in one place.

    Taking `s3://bucket/run` for a local folder would write a run into `./s3:/bucket/run` and
    lose it with the pod, so every URI a command touches passes through this check.
    """
    if uri.startswith(GCS_SCHEME):
        return True
    match = _SCHEME.match(uri)
    if match and match.group(1).lower() != "file":
        raise StorageError(
            f"{uri!r}: {match.group(1)}:// is not supported; use a local path or gs://BUCKET/PATH."
        )
    return False


def join(base: str, *parts: str) -> str:
    """Join path parts onto a URI (never with a backslash, never with a double slash)."""
    if not is_gcs(base):
        return os.path.join(base, *parts)
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def normalize(uri: str) -> str:
    """A canonical spelling: absolute local paths, gs:// without a trailing slash."""
    if not uri.strip():
        raise StorageError("an empty path was given where a local path or gs:// URI is needed.")
    if is_gcs(uri):
        return uri.rstrip("/") if uri.rstrip("/") != "gs:" else uri
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return os.path.abspath(os.path.expanduser(uri))


def split_gcs(uri: str) -> tuple[str, str]:
    """`gs://bucket/a/b` -> (`bucket`, `a/b`)."""
    rest = uri[len(GCS_SCHEME) :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket; expected gs://BUCKET/PATH.")
    return bucket, key


def _client():  # noqa: ANN202 - google.cloud.storage.Client, imported lazily
    # One client per emulator setting: a process (or a test) that changes
    # STORAGE_EMULATOR_HOST gets a client for the new address, not a stale one.
    return _client_for(os.environ.get("STORAGE_EMULATOR_HOST", ""))


@functools.lru_cache(maxsize=4)
def _client_for(emulator_host: str):  # noqa: ANN202
    from google.cloud import storage

    if emulator_host:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            credentials=AnonymousCredentials(),
            project=os.environ.get("GOOGLE_CLOUD_PROJECT", "test"),
        )
    try:
        return storage.Client()
    except Exception as exc:  # google.auth raises several unrelated types here
        raise StorageError(f"cannot set up Google Cloud Storage credentials: {exc}") from exc


def _blob(uri: str):  # noqa: ANN202
    bucket, key = split_gcs(uri)
    if not key:
        raise StorageError(f"{uri!r} names a bucket, not an object.")
    return _client().bucket(bucket).blob(key)


class _gcs_errors:  # noqa: N801 - used like a function: `with _gcs_errors(uri, "read"):`
    """Turns GCS client exceptions into FileNotFoundError, FileExistsError or StorageError."""

    def __init__(self, uri: str, action: str) -> None:
        self.uri, self.action = uri, action

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:  # noqa: ANN001
        if exc is None or isinstance(exc, (StorageError, FileNotFoundError, FileExistsError)):
            return False
        from google.api_core import exceptions as gexc

        if isinstance(exc, gexc.NotFound):
            raise FileNotFoundError(f"{self.uri} does not exist") from exc
        if isinstance(exc, gexc.PreconditionFailed):
            raise FileExistsError(f"{self.uri} already exists") from exc
        if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized)):
            raise StorageError(f"no permission to {self.action} {self.uri}.") from exc
        if isinstance(exc, gexc.RetryError) or _is_transient(exc):
            raise StorageUnavailable(
                f"cannot {self.action} {self.uri}: {_short(exc)} (the storage service kept "
                f"failing for {deadline_s():.0f} s; a later attempt may succeed)."
            ) from exc
        if isinstance(exc, (gexc.GoogleAPIError, OSError, ConnectionError)) or "requests" in (
            type(exc).__module__ or ""
        ):
            raise StorageError(f"cannot {self.action} {self.uri}: {_short(exc)}") from exc
        return False


def _is_transient(exc: BaseException) -> bool:
    """Worth another try: connection errors, timeouts, 408, 429 and 5xx answers.

    google-cloud-storage's own predicate (it knows its transport's exception types, token
    refreshes that failed on the network included), plus timeouts it leaves out.
    """
    from google.api_core import exceptions as gexc
    from google.cloud.storage.retry import _should_retry

    if isinstance(exc, (gexc.ServerError, TimeoutError)):
        return True
    if isinstance(exc, gexc.GoogleAPICallError) and exc.code == 408:  # Request Timeout
        return True
    return bool(_should_retry(exc))


def _retry(on_error: Callable[[Exception], None] | None = None):  # noqa: ANN202 - a Retry
    """Retry transient errors with exponential backoff (0.5 s doubling, at most 10 s apart)
    until deadline_s() has passed; on_error sees each error that is retried."""
    from google.api_core.retry import Retry

    return Retry(
        predicate=_is_transient,
        initial=0.5,
        maximum=10.0,
        multiplier=2.0,
        timeout=deadline_s(),
        on_error=on_error,
    )


def _timeout() -> tuple[float, float]:
    """(connect, read) limits of one request, never longer than the whole call's deadline."""
    deadline = deadline_s()
    return min(_CONNECT_TIMEOUT_S, deadline), min(_READ_TIMEOUT_S, deadline)


def _bounded() -> dict[str, Any]:
    """The timeout and retry arguments every google-cloud-storage call here gets."""
    return {"timeout": _timeout(), "retry": _retry()}


def _short(exc: BaseException) -> str:
    """The gist of an error in a few words: the OS's words for a network failure, else the
    innermost exception's text (never a repr of nested exceptions' argument tuples)."""
    from google.api_core.exceptions import RetryError

    if isinstance(exc, RetryError) and exc.cause is not None:
        exc = exc.cause
    seen: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(seen) < 20:  # requests wraps urllib3 wraps http.client / socket
        cause = pending.pop(0)
        if cause in seen:
            continue
        seen.append(cause)
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        status = getattr(getattr(cause, "response", None), "status_code", None)
        if isinstance(status, int):  # the download layer's InvalidResponse: the answer's status
            return f"HTTP {status} {getattr(cause.response, 'reason', '') or ''}".strip()
        pending += [a for a in cause.args if isinstance(a, BaseException)]
        pending += [c for c in (cause.__cause__, cause.__context__) if c is not None]
    innermost = seen[-1]
    text = first_line(innermost, 200)
    if text.startswith("(") or not text:  # a tuple of arguments: say what kind of failure
        text = type(innermost).__name__
    return text


# ---------------------------------------------------------------- reading


def read_bytes(uri: str) -> bytes:
    if not is_gcs(uri):
        try:
            with open(uri, "rb") as f:
                return f.read()
        except NotADirectoryError as exc:  # a/b/c where a/b is a file: c is simply not there
            raise FileNotFoundError(f"{uri} does not exist ({exc.strerror})") from exc
    with _gcs_errors(uri, "read"):
        return _blob(uri).download_as_bytes(**_bounded())


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    return json.loads(read_text(uri))


def exists(uri: str) -> bool:
    if not is_gcs(uri):
        return os.path.exists(uri)
    with _gcs_errors(uri, "look up"):
        return _blob(uri).exists(**_bounded())


def size(uri: str) -> int:
    if not is_gcs(uri):
        return os.path.getsize(uri)
    with _gcs_errors(uri, "look up"):
        blob = _blob(uri)
        blob.reload(**_bounded())
        return int(blob.size)


def modified(uri: str) -> float:
    """When the object or file was last written, in seconds since the epoch."""
    if not is_gcs(uri):
        return os.path.getmtime(uri)
    with _gcs_errors(uri, "look up"):
        blob = _blob(uri)
        blob.reload(**_bounded())
        if blob.updated is None:
            raise StorageError(f"{uri} has no modification time")
        return blob.updated.timestamp()


# ---------------------------------------------------------------- writing


def write_bytes(uri: str, data: bytes, *, if_absent: bool = False) -> None:
    """Write an object whole or not at all; with if_absent, FileExistsError if it exists."""
    if not is_gcs(uri):
        _write_local_atomic(uri, data, if_absent=if_absent)
        return
    if if_absent and len(data) > _SIMPLE_UPLOAD_MAX:
        raise ValueError("create-only writes are limited to 8 MiB objects")
    retried: list[Exception] = []
    try:
        with _gcs_errors(uri, "write"):
            blob = _blob(uri)
            kwargs = {"if_generation_match": 0} if if_absent else {}
            # A whole-object upload is safe to repeat: the same bytes land either way.
            blob.upload_from_string(
                data, timeout=_timeout(), retry=_retry(retried.append), **kwargs
            )
    except FileExistsError:
        # After a retry, "it exists" may be our own first attempt, whose answer was lost.
        if not (retried and _holds(uri, data)):
            raise


def _holds(uri: str, data: bytes) -> bool:
    """Whether the object holds exactly these bytes (it may be gone again: then False)."""
    try:
        return read_bytes(uri) == data
    except FileNotFoundError:
        return False


def write_text(uri: str, text: str, *, if_absent: bool = False) -> None:
    write_bytes(uri, text.encode("utf-8"), if_absent=if_absent)


def write_json(uri: str, obj: Any, *, if_absent: bool = False) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=False) + "\n", if_absent=if_absent)


def upload_file(local_path: str, uri: str) -> None:
    """Copy a finished local file to a URI, atomically from the reader's side."""
    if not is_gcs(uri):
        with _local_errors(uri):
            _copy_local_atomic(local_path, uri)
        return
    with _gcs_errors(uri, "write"):
        _blob(uri).upload_from_filename(local_path, **_bounded())


def _copy_local_atomic(local_path: str, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        shutil.copyfile(local_path, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on disk before it becomes visible, as write_bytes does
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def _tmp_sibling(path: str) -> str:
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    # mkstemp makes 0600 files; what we publish must be readable like any file the user writes
    # (a trainer running as another user reads dataset.json from a shared volume).
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    return tmp


def _write_local_atomic(path: str, data: bytes, *, if_absent: bool) -> None:
    with _local_errors(path):
        _write_local_atomic_unchecked(path, data, if_absent=if_absent)


def _write_local_atomic_unchecked(path: str, data: bytes, *, if_absent: bool) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if if_absent:
            os.link(tmp, path)  # fails with FileExistsError if someone else was first
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def read_versioned(uri: str) -> tuple[bytes, str] | None:
    """An object's bytes and a version token for write_if_version; None when it is absent.

    GCS: the object's generation. Local: a digest of the content, which write_if_version
    compares under a file lock (the lease files this serves always change content).
    """
    blob = _blob(uri) if is_gcs(uri) else None
    try:
        data = read_bytes(uri) if blob is None else _download(blob, uri)
    except FileNotFoundError:
        return None
    return data, hashlib.sha256(data).hexdigest() if blob is None else str(blob.generation)


def _download(blob, uri: str) -> bytes:  # noqa: ANN001 - a google.cloud.storage.Blob
    """The blob's bytes; its generation is set on it afterwards (what read_versioned needs)."""
    with _gcs_errors(uri, "read"):
        return blob.download_as_bytes(**_bounded())


def write_if_version(uri: str, data: bytes, version: str | None) -> str | None:
    """Replace an object only if it is still at `version` (None: only if absent).

    Returns the new version when written, None when someone else wrote or created it first
    (compare-and-swap: GCS by generation precondition, local by an exclusive lock on a hidden
    sibling file). A write whose answer was lost is retried and then finds its own write in
    place: None too; a caller that must know reads the object (common.lease does).
    """
    if is_gcs(uri):
        if len(data) > _SIMPLE_UPLOAD_MAX:
            raise ValueError("conditional writes are limited to 8 MiB objects")
        blob = _blob(uri)
        try:
            with _gcs_errors(uri, "write"):
                blob.upload_from_string(data, if_generation_match=int(version or 0), **_bounded())
        except FileExistsError:
            return None
        return str(blob.generation)
    import fcntl

    directory, name = os.path.split(uri)
    os.makedirs(directory or ".", exist_ok=True)
    with open(os.path.join(directory, f".{name}.lock"), "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        current = read_versioned(uri)
        if (current[1] if current else None) != version:
            return None
        _write_local_atomic(uri, data, if_absent=False)
        return hashlib.sha256(data).hexdigest()


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def delete(uri: str, *, missing_ok: bool = True) -> None:
    if not is_gcs(uri):
        try:
            os.unlink(uri)
        except FileNotFoundError:
            if not missing_ok:
                raise
        return
    try:
        with _gcs_errors(uri, "delete"):
            # Repeating a delete is harmless: a lost answer's retry finds it gone (missing_ok).
            _blob(uri).delete(**_bounded())
    except FileNotFoundError:
        if not missing_ok:
            raise


def copy(src: str, dst: str) -> None:
    """Copy one object; server-side within GCS, streamed between local and GCS."""
    if is_gcs(src) and is_gcs(dst):
        with _gcs_errors(src, "copy"):
            source = _blob(src)
            dst_bucket, dst_key = split_gcs(dst)
            source.bucket.copy_blob(source, _client().bucket(dst_bucket), dst_key, **_bounded())
        return
    if is_gcs(dst):
        upload_file(src, dst)
        return
    write_bytes(dst, read_bytes(src))


# ---------------------------------------------------------------- listing


def list_files(prefix: str, *, recursive: bool = False) -> list[str]:
    """Files under a directory-like URI, as full URIs, sorted. Missing directory -> []."""
    return sorted(_iter_files(prefix, recursive))


def _iter_files(prefix: str, recursive: bool) -> Iterator[str]:
    if not is_gcs(prefix):
        if not os.path.isdir(prefix):
            return
        if not recursive:
            for entry in os.scandir(prefix):
                if not entry.is_dir():
                    yield entry.path
            return
        for root, _dirs, files in os.walk(prefix):
            for name in files:
                yield os.path.join(root, name)
        return
    bucket, key = split_gcs(prefix)
    key = key.rstrip("/") + "/" if key else ""
    with _gcs_errors(prefix, "list"):
        blobs = _client().list_blobs(
            bucket, prefix=key, delimiter=None if recursive else "/", **_bounded()
        )
        for blob in blobs:
            if not blob.name.endswith("/"):  # folder placeholders made by consoles
                yield f"{GCS_SCHEME}{bucket}/{blob.name}"


def list_dirs(prefix: str) -> list[str]:
    """Immediate sub-directories of a directory-like URI, as full URIs, sorted."""
    if not is_gcs(prefix):
        if not os.path.isdir(prefix):
            return []
        return sorted(e.path for e in os.scandir(prefix) if e.is_dir())
    bucket, key = split_gcs(prefix)
    key = key.rstrip("/") + "/" if key else ""
    with _gcs_errors(prefix, "list"):
        pages = _client().list_blobs(bucket, prefix=key, delimiter="/", **_bounded())
        for _ in pages:  # the prefixes are only known after iterating
            pass
        return sorted(f"{GCS_SCHEME}{bucket}/{p.rstrip('/')}" for p in pages.prefixes)


def is_dir(uri: str) -> bool:
    """True when a local directory exists, or a GCS prefix holds at least one object."""
    if not is_gcs(uri):
        return os.path.isdir(uri)
    bucket, key = split_gcs(uri)
    key = key.rstrip("/") + "/" if key else ""
    with _gcs_errors(uri, "list"):
        blobs = _client().list_blobs(bucket, prefix=key, max_results=1, **_bounded())
        return any(True for _ in blobs)


def check_writable_location(uri: str) -> None:
    """Fail with one sentence, before any work, when a bucket cannot be reached."""
    if not is_gcs(uri):
        parent = uri
        while not os.path.exists(parent):
            parent = os.path.dirname(parent) or "."
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            raise StorageError(f"cannot write under {uri}: {parent} is not a writable directory.")
        return
    bucket, key = split_gcs(uri)
    from google.api_core import exceptions as gexc
    from google.api_core.retry import Retry

    # A pre-flight check: an unreachable endpoint must fail in seconds, not after the
    # client's default two minutes of retries.
    retry = Retry(initial=0.25, maximum=1.0, timeout=_CHECK_DEADLINE_S)
    try:
        it = _client().list_blobs(
            bucket, prefix=key, max_results=1, timeout=(_CHECK_DEADLINE_S, 30), retry=retry
        )
        for _ in it:
            break
    except gexc.NotFound as exc:
        raise StorageError(f"bucket gs://{bucket} does not exist.") from exc
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise StorageError(f"no permission to use bucket gs://{bucket}.") from exc
    except Exception as exc:  # network failures come in many types
        message = f"cannot reach bucket gs://{bucket}: {_short(exc)}."
        if isinstance(exc, gexc.RetryError) or _is_transient(exc):
            raise StorageUnavailable(message) from exc  # an outage: a later attempt may pass
        raise StorageError(message) from exc
