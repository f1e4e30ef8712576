"""`preprocess`: python -m preprocess as a Kubernetes Job, Indexed for big image sets.

With --tasks K the Job is Indexed with K completions, all K pods at once; each pod's preprocess
takes its --task-index from JOB_COMPLETION_INDEX and the last task to finish writes
dataset.json. The pods use the CPU image and the evaluator's resources, nodeSelector and
tolerations from the values (the chart has no preprocess section).
"""

from __future__ import annotations

import argparse
import logging

from common import storage
from common.cli import UserError
from launcher import apply, names, settings
from launcher.launch import load_values
from launcher.objects import Renderer, to_yaml

log = logging.getLogger("launcher")


def main(args: argparse.Namespace) -> int:
    uris = {}
    for flag in ("train_dir", "val_dir", "out"):
        uri = storage.normalize(getattr(args, flag))
        if not storage.is_gcs(uri):
            raise UserError(
                f"--{flag.replace('_', '-')} {uri} is a local path, which pods cannot see; use "
                "gs://BUCKET/PATH (or run python -m preprocess here)."
            )
        uris[flag] = uri
    name = names.check_sweep_name(args.name or names.sweep_name_from(storage.basename(uris["out"])))
    values = load_values(args, "kubernetes")
    settings.check_schema({**values, "data": uris["out"], "out": uris["out"], "lrs": [1.0]})
    extra: list[str] = []
    if args.labels_file:
        extra += ["--labels-file", args.labels_file]
    for flag in ("train_shards", "val_shards", "max_side"):
        if getattr(args, flag) is not None:
            extra += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.strict:
        extra.append("--strict")
    objs = Renderer(values, namespace=args.namespace).preprocess(
        name, uris["train_dir"], uris["val_dir"], uris["out"], args.tasks, extra
    )
    if args.dry_run:
        print(to_yaml(objs), end="")
        return 0
    for flag in ("train_dir", "val_dir"):
        if not storage.is_dir(uris[flag]):
            raise UserError(f"--{flag.replace('_', '-')} {uris[flag]} does not exist.")
    storage.check_writable_location(uris["out"])
    from launcher.cluster_backend import connect

    cluster = connect(args)
    todo = apply.plan(cluster, objs)
    apply.apply(cluster, todo.create)
    job = names.preprocess_job(name)
    print(f"preprocess Job {job} in namespace {cluster.namespace} ({args.tasks} task(s))")
    print(f"  follow: kubectl -n {cluster.namespace} logs -f job/{job}")
    return 0
