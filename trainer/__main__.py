"""`python -m trainer`: fine-tune Inception-v3 on a dataset; see trainer/__init__.py."""

from __future__ import annotations

import logging
import os
import sys

from common.cli import run_main, setup_logging
from trainer.config import parse_args
from trainer.metrics import TrainMetrics
from trainer.prepare import prepare
from trainer.signals import StopRequest

log = logging.getLogger("trainer")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    config, given = parse_args(argv)
    setup_logging(config.verbose)
    plan = prepare(config, given)
    if plan.already_complete:
        log.info(
            "the run in %s is already complete at step %s; nothing to do",
            config.run_dir,
            plan.already_complete.get("final_step"),
        )
        return 0
    metrics = TrainMetrics(plan.run_name)
    if config.metrics_port:
        metrics.serve(config.metrics_port)
        log.info("serving Prometheus metrics on port %d", config.metrics_port)
    # From here on a stop request is honoured by saving first.
    stop = StopRequest().install()

    from trainer.loop import train  # TensorFlow starts here, after every check passed

    train.run(plan, metrics, stop)
    return stop.exit_code


if __name__ == "__main__":
    sys.exit(run_main(main))
