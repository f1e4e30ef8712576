"""`delete`: remove a sweep's cluster objects, found by their labels; the bucket is untouched.

Jobs go with their pods (background propagation); a run's files, checkpoints and exports stay
where they are, so launching the same sweep again resumes it.
"""

from __future__ import annotations

import argparse
import logging
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


def delete_sweep(cluster: Cluster, sweep: str) -> int:
    """Delete every object of the sweep; returns how many were deleted."""
    deleted = 0
    for api_version, kind in KINDS:
        if not cluster.serves(api_version, kind):
            continue
        for obj in cluster.list(api_version, kind, names.selector(sweep)):
            name = obj["metadata"]["name"]
            if cluster.delete(api_version, kind, name):
                log.info("deleted %s %s/%s", kind, cluster.namespace, name)
                deleted += 1
    return deleted


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
