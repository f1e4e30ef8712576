"""Keep the workers' gRPC service on loopback when every worker of a run is on this machine.

The workers of a run talk through TensorFlow's gRPC server, which has no authentication and
always listens on every interface (grpc_server_lib.cc binds "0.0.0.0:<port>"; neither the
ServerDef, the ClusterSpec nor any TF_GRPC_* variable names another address). When the worker
hosts are all 127.x addresses (the local launcher's `--workers N`), nothing off this machine
needs to reach it, so the trainer re-executes itself once, before TensorFlow loads, with
loopback_bind.c preloaded: that turns the server's wildcard bind of this worker's port into a
bind to its own 127.x address. The shim is compiled with the system's C compiler into a
private cache the first time; where that cannot be done (no compiler, not Linux) the run goes
on as before with one warning line saying that the port is open on every interface.

On a cluster the hosts are pod names that other nodes dial: nothing changes there.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import shutil
import subprocess
import sys
import tempfile

log = logging.getLogger("trainer")

BIND_ENV = "FINETUNE_LOOPBACK_BIND"  # read by loopback_bind.c: the host:port to bind instead
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loopback_bind.c")
COMPILE_TIMEOUT_S = 60


def loopback_host(address: str) -> str | None:
    """The IPv4 loopback address of `host:port`, else None (a name, or another address)."""
    host = address.rsplit(":", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return host if ip.version == 4 and ip.is_loopback else None


def confine(addresses: list[str], index: int) -> None:
    """Re-execute this trainer with its gRPC port bound to loopback, if all workers are local.

    Returns when there is nothing to do (a worker elsewhere, already confined, not the
    trainer's own process) or it cannot be done (then says so once); else does not return.
    """
    if len(addresses) < 2 or not all(loopback_host(a) for a in addresses):
        return
    mine = addresses[index]
    if os.environ.get(BIND_ENV) == mine:
        return  # this is the re-executed process: the shim is preloaded
    if not _is_trainer_process():
        return  # a library caller (a test): re-executing it would replace that process
    shim = _build_shim()
    if shim is None:
        return
    env = dict(os.environ)
    env[BIND_ENV] = mine
    env["LD_PRELOAD"] = " ".join(p for p in (shim, env.get("LD_PRELOAD", "")) if p)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def _is_trainer_process() -> bool:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "trainer.__main__"


def _warn(why: str) -> None:
    log.warning(
        "TensorFlow's gRPC server of this worker will listen on every interface, not only "
        "on 127.0.0.1 (%s); it has no authentication, so keep this machine's ports firewalled",
        why,
    )


def _build_shim() -> str | None:
    """The compiled shim's path (built once per source version), or None after a warning."""
    if not sys.platform.startswith("linux"):
        _warn(f"confining it needs LD_PRELOAD, which {sys.platform} lacks")
        return None
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    cache = _private_cache()
    target = os.path.join(cache, f"loopback-bind-{digest}.so")
    if os.path.exists(target):
        return target
    if compiler is None:
        _warn("no C compiler here to build trainer/loopback_bind.c")
        return None
    fd, partial = tempfile.mkstemp(prefix=".loopback-bind-", suffix=".so", dir=cache)
    os.close(fd)
    try:
        subprocess.run(
            [compiler, "-shared", "-fPIC", "-O2", "-o", partial, SOURCE, "-ldl"],
            check=True,
            capture_output=True,
            timeout=COMPILE_TIMEOUT_S,
        )
        os.replace(partial, target)  # whole or not at all: other workers build it at once
    except (OSError, subprocess.SubprocessError) as exc:
        _warn(f"building trainer/loopback_bind.c failed: {str(exc).splitlines()[0]}")
        return None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


def _private_cache() -> str:
    """A directory only this user can write: a library to preload must not be anyone else's."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "inception-finetune")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.stat(path)
        if info.st_uid == os.getuid() and not info.st_mode & 0o022:
            return path
    except OSError:
        pass
    return tempfile.mkdtemp(prefix="inception-finetune-")  # private, rebuilt each time
