"""`delete`: remove a sweep's cluster objects, found by their labels; the bucket is untouched.

Jobs go with their pods (background propagation); a run's files, checkpoints and exports stay
where they are, so launching the same sweep again resumes it. A tuner Job (`launcher tune` on a
cluster) goes first, and its pod is waited for: a tuner still running would create the next
stage's objects behind our back.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from launcher import names

if TYPE_CHECKING:
    from launcher.kube import Cluster

log = logging.getLogger("launcher")

# Jobs first (stop training), then what serves them, the identity last.
KINDS = (
    ("batch/v1", "Job"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("v1", "ServiceAccount"),
)


TUNER_STOP_S = 120.0  # a tuner pod dies at SIGTERM; its kubelet may take a while to send it
TUNER_POLL_S = 2.0


def delete_sweep(cluster: Cluster, sweep: str, sleep: Callable[[float], None] = time.sleep) -> int:
    """Delete every object of the sweep, the tuner first; returns how many were deleted."""
    deleted = 0
    if cluster.delete("batch/v1", "Job", names.tuner_job(sweep)):
        log.info("deleted Job %s/%s", cluster.namespace, names.tuner_job(sweep))
        deleted += 1
        _wait_for_tuner_pods(cluster, sweep, sleep)
    for api_version, kind in KINDS:
        if not cluster.serves(api_version, kind):
            continue
        for obj in cluster.list(api_version, kind, names.selector(sweep)):
            name = obj["metadata"]["name"]
            if cluster.delete(api_version, kind, name):
                log.info("deleted %s %s/%s", kind, cluster.namespace, name)
                deleted += 1
    return deleted


def _wait_for_tuner_pods(cluster: Cluster, sweep: str, sleep: Callable[[float], None]) -> None:
    selector = names.component_selector(sweep, "tuner")
    waited = 0.0
    while cluster.list("v1", "Pod", selector):
        if waited >= TUNER_STOP_S:
            log.warning("the tuner's pod is still there after %.0f s; deleting the rest anyway",
                        waited)  # fmt: skip
            return
        if waited == 0:
            log.info("waiting for the tuner's pod to stop")
        sleep(TUNER_POLL_S)
        waited += TUNER_POLL_S


def main(args: argparse.Namespace) -> int:
    from launcher.cluster_backend import connect

    sweep = names.check_sweep_name(args.sweep)
    cluster = connect(args)
    deleted = delete_sweep(cluster, sweep)
    if not deleted:
        print(f"no objects of sweep {sweep} in namespace {cluster.namespace}")
    else:
        print(f"deleted {deleted} object(s) of sweep {sweep}; the bucket is untouched")
    return 0
