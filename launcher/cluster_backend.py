"""`--backend kubernetes`: render the sweep's objects and apply them idempotently."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from launcher import apply, names, record
from launcher.objects import Renderer, to_yaml
from launcher.spec import SweepSpec

log = logging.getLogger("launcher")


def connect(args: argparse.Namespace) -> Any:
    """A reachable cluster (one sentence within seconds if not), logged once."""
    from launcher.kube import Cluster

    cluster = Cluster(namespace=args.namespace, context=args.context)
    cluster.check_reachable()
    log.info("cluster %s, namespace %s", cluster.server, cluster.namespace)
    return cluster


def run(spec: SweepSpec, values: dict[str, Any], args: argparse.Namespace) -> int:
    from launcher.launch import check_bucket

    objs = Renderer(values, namespace=args.namespace).sweep(spec)
    if args.dry_run:
        print(to_yaml(objs), end="")
        return 0
    check_bucket(spec)
    cluster = connect(args)
    todo = apply.plan(cluster, objs)  # every conflict is found before anything is written
    record.record(spec)
    apply.apply(cluster, todo.create)
    log.info(
        "sweep %s: %d object(s) created, %d already there and unchanged",
        spec.name, len(todo.create), len(todo.unchanged),
    )  # fmt: skip
    ns = cluster.namespace
    each = f" of {spec.workers} worker pods each" if spec.workers > 1 else ""
    print(f"sweep {spec.name}: {len(spec.lrs)} trainer Job(s){each} in namespace {ns}")
    status = f"python -m launcher status --sweep {spec.out} --backend kubernetes -n {ns}"
    print(f"  runs:        {status}")
    service = names.tensorboard(spec.name)
    tensorboard = [o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == service]
    if tensorboard:
        port = tensorboard[0]["spec"]["ports"][0]["port"]
        print(f"  TensorBoard: kubectl -n {ns} port-forward svc/{service} {port}:{port}")
        print(f"               then open http://localhost:{port}")
    print(f"  remove:      python -m launcher delete --sweep {spec.name} -n {ns}")
    return 0
