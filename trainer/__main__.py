"""`python -m trainer`: fine-tune Inception-v3 on a dataset; see trainer/__init__.py."""

from __future__ import annotations

import logging
import os
import sys

from common import storage
from common.cli import run_main, setup_logging
from common.lease import Lease
from trainer.config import parse_args
from trainer.metrics import TrainMetrics
from trainer.prepare import Plan, prepare
from trainer.signals import StopRequest
from trainer.stopping import from_request, save_complete
from trainer.workers import Cluster, WorkerLost, cluster_of

log = logging.getLogger("trainer")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    storage.bound_tensorflow_gcs()  # before TensorFlow's gs:// reads its retry settings
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["weights"]:
        from trainer import imagenet

        return imagenet.main(argv[1:])
    if argv[:1] == ["lr-find"]:
        from trainer import lr_find

        return lr_find.main(argv[1:])
    config, given = parse_args(argv)
    setup_logging(config.verbose)
    cluster = cluster_of(config)
    plan = prepare(config, given)
    if _report_complete(plan):
        return 0
    if not cluster.chief:  # writes nothing, so holds no lease: the chief does
        return _train(plan, None, cluster)
    # One writer per run dir: a second trainer waits for a dead holder's lease to expire,
    # or is refused naming the live one.
    lease = Lease(plan.run.lease_uri, role="trainer", ttl_s=config.lease_seconds)
    try:
        if lease.acquire():  # an earlier trainer may have written since prepare looked
            plan = prepare(config, given)
            if _report_complete(plan):
                return 0
        return _train(plan, lease, cluster)
    finally:
        lease.release()


def _report_complete(plan: Plan) -> bool:
    if plan.already_complete:
        stopped = plan.already_complete.get("stopped")
        log.info(
            "the run in %s is already complete at step %s%s; nothing to do",
            plan.config.run_dir,
            plan.already_complete.get("final_step"),
            f" (stopped early: {stopped.get('reason')})" if isinstance(stopped, dict) else "",
        )
    return bool(plan.already_complete)


def _train(plan: Plan, lease: Lease | None, cluster: Cluster) -> int:
    config = plan.config
    request = plan.run.stop_request()
    if request is not None:  # stopped while no trainer ran: no model to build for that
        if lease is not None:
            lease.check()
            save_complete(plan.run, plan.resume_step or 0, from_request(request), None)
        return 0
    metrics = TrainMetrics(plan.run_name)
    if config.metrics_port and cluster.chief:  # the others' counts would be counted twice
        metrics.serve(config.metrics_port)
        log.info("serving Prometheus metrics on port %d", config.metrics_port)
    # From here on a stop request is honoured by saving first.
    stop = StopRequest(config.exit_code_on_stop).install()

    from trainer.loop import train  # TensorFlow starts here, after every check passed

    try:
        result = train.run(plan, metrics, stop, lease=lease, cluster=cluster)
    except WorkerLost as exc:
        log.error("error: %s", exc)
        return 1
    # Stopped early is finished too: exit 0, so that a Job succeeds and frees its GPU.
    if result.complete or result.stopped is not None:
        return 0
    # Not finished: this process was told to stop, or (several workers) another one was; all
    # of them exit as a stopped pod does, so that the Job restarts the group.
    return stop.exit_code if stop.requested else config.exit_code_on_stop


if __name__ == "__main__":
    sys.exit(run_main(main))
