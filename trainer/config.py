"""The trainer's configuration: one dataclass, overridable from the command line.

Fields marked `hparam` are the run's hyperparameters: saved in hparams.json, compared on
resume, shown in TensorBoard's HParams tab. The others only steer this process (where to
checkpoint, what port to serve metrics on) and may change from one start to the next.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

from common import args, trainer_args
from common.args import ArgumentParser
from common.model import DEFAULT_DROPOUT

FINE_TUNE_MODES = ("all", "head")
HEAD_INITS = ("auto", "fit", "random")
OPTIMIZERS = ("rmsprop", "sgd", "adam")
LR_SCHEDULES = ("exponential", "cosine")
PRECISIONS = ("auto", "float32", "mixed")
DEFAULT_EPOCHS = 10.0
# --lr when not given, for --fine-tune all from pretrained weights: a tenth of the head's. The
# head is fitted first, so this stage only adjusts features that already work (the Keras
# transfer-learning guide's second stage, at a low lr). Measured on the held-out photos of
# benchmarks/bench_transfer.py (299 px, 40 steps, 2 seeds): 0.886 at 1e-4 against 0.860 and
# 0.877 (two measurements) at 1e-3, the probe 0.877; at 1e-3 the fitted head's validation loss
# rose within 10 steps (tests/test_transfer.py).
PRETRAINED_ALL_LR = 1e-4


def _hparam(default: Any) -> Any:
    return dataclasses.field(default=default, metadata={"hparam": True})


@dataclasses.dataclass
class TrainConfig:
    # What and where.
    data: str = _hparam("")
    run_dir: str = ""
    # Length: exactly one of steps / epochs is set once the dataset size is known.
    steps: int | None = _hparam(None)
    epochs: float | None = _hparam(None)
    # Model.
    image_size: int = _hparam(299)
    fine_tune: str = _hparam("all")
    head_warmup_steps: int = _hparam(0)
    head_init: str = _hparam("auto")
    weights: str = _hparam("imagenet")
    dropout: float = _hparam(DEFAULT_DROPOUT)
    # Optimisation: the classic Inception recipe by default.
    batch_size: int = _hparam(32)
    lr: float = _hparam(0.001)
    optimizer: str = _hparam("rmsprop")
    momentum: float = _hparam(0.9)
    rmsprop_rho: float = _hparam(0.9)
    rmsprop_epsilon: float = _hparam(1.0)
    lr_schedule: str = _hparam("exponential")
    lr_decay_factor: float = _hparam(0.16)
    lr_decay_epochs: float = _hparam(30.0)
    warmup_epochs: float = _hparam(0.0)
    label_smoothing: float = _hparam(0.1)
    weight_decay: float = _hparam(4e-5)
    precision: str = _hparam("auto")
    seed: int = _hparam(0)
    # Process controls.
    checkpoint_every: int = 500
    checkpoint_minutes: float = 10.0
    keep_checkpoints: int = 5
    log_every: int = 10
    metrics_port: int = 0
    xla: bool = False
    shuffle_buffer: int = 2048
    force: bool = False
    exit_code_on_stop: int = 0
    lease_seconds: float = 90.0
    verbose: bool = False
    # Several workers (MultiWorkerMirroredStrategy): how many processes make up this run, where
    # they listen, which one this is. Worker 0 is the chief. Not hyperparameters: the global
    # batch is the same whatever the number of workers.
    workers: int = 1
    worker_hosts: str = ""
    worker_index: int = 0

    def worker_addresses(self) -> list[str]:
        """host:port of every worker, entry i = worker i ({index} patterns expanded); [] for a
        single worker. The flags were checked by parse_args."""
        if self.workers <= 1:
            return []
        return expand_worker_hosts(self.worker_hosts, self.workers)

    def tf_config(self) -> dict[str, Any] | None:
        """TF_CONFIG's content for these flags (cluster and task), or None for one worker."""
        if self.workers <= 1:
            return None
        return {
            "cluster": {"worker": self.worker_addresses()},
            "task": {"type": "worker", "index": self.worker_index},
        }


def hparam_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("hparam")]


# ---------------------------------------------------------------- command line


# The bounds the launcher checks too live in common.trainer_args (it may not import this).
MAX_WORKERS = trainer_args.MAX_WORKERS

_positive_int = args.positive_int
_non_negative_int = args.non_negative_int
_positive_float = args.positive_float
_non_negative_float = args.non_negative_float
_fraction = args.fraction
_port = args.port
_image_size = trainer_args.image_size
_batch_size = trainer_args.batch_size
_workers = trainer_args.workers

# ---------------------------------------------------------------- several workers

INDEX_PLACEHOLDER = "{index}"
# Kubernetes sets it in every pod of an Indexed Job: the pod's index, 0 to completions-1.
JOB_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"
# TensorFlow's own description of a cluster; the trainer reads it when set (instead of flags).
TF_CONFIG = "TF_CONFIG"
# host:port; the host a name or an IPv4 address, or an IPv6 address in brackets.
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_]([-A-Za-z0-9_.]*[A-Za-z0-9_])?):([0-9]+)$")


def expand_worker_hosts(text: str, workers: int) -> list[str]:
    """--worker-hosts as one address per worker: a pattern with {index}, or the list itself."""
    if INDEX_PLACEHOLDER in text:
        return [text.replace(INDEX_PLACEHOLDER, str(i)) for i in range(workers)]
    return [item.strip() for item in text.split(",")]


def check_workers(config: TrainConfig, given: set[str], env: Mapping[str, str]) -> str | None:
    """Complete and check the several-workers flags: None if they hold, else the one sentence
    that says why not. --worker-index defaults to JOB_COMPLETION_INDEX when --workers > 1."""
    n = config.workers
    if env.get(TF_CONFIG):
        mine = [f"--{name.replace('_', '-')}" for name in ("worker_hosts", "worker_index")
                if name in given]  # fmt: skip
        if n > 1:
            mine.insert(0, f"--workers {n}")
        if mine:
            return (
                f"{TF_CONFIG} is set in the environment and {' and '.join(mine)} given: both "
                f"describe the workers of this run; unset {TF_CONFIG} or drop the flags"
            )
        return None  # the trainer takes the workers and this one's index from TF_CONFIG
    if n == 1:
        if "worker_hosts" in given:
            return "--worker-hosts only applies with --workers 2 or more"
        if config.worker_index != 0:
            index = config.worker_index
            return f"--worker-index {index} needs --workers {index + 1} or more"
        return None
    hosts = config.worker_hosts.strip()
    config.worker_hosts = hosts
    if not hosts:
        return (
            f"--workers {n} needs --worker-hosts: {n} comma-separated host:port addresses (entry "
            f"i is worker i), or one host:port pattern with {INDEX_PLACEHOLDER} such as "
            f"run-{INDEX_PLACEHOLDER}.run:2222"
        )
    count = hosts.count(INDEX_PLACEHOLDER)
    if count and "," in hosts:
        return (
            f"--worker-hosts {hosts!r} mixes a list with {INDEX_PLACEHOLDER}: give either {n} "
            f"addresses or one pattern"
        )
    if count > 1:
        return f"--worker-hosts pattern {hosts!r} must contain {INDEX_PLACEHOLDER} once"
    addresses = expand_worker_hosts(hosts, n)
    if len(addresses) != n:
        return (
            f"--worker-hosts has {len(addresses)} address(es) for --workers {n}: give one per "
            f"worker (entry i is worker i), or one pattern with {INDEX_PLACEHOLDER}"
        )
    for address in addresses:
        match = _ADDRESS.match(address)
        if not match or not 1 <= int(match.group(3)) <= 65535:
            return (
                f"--worker-hosts: {address!r} is not host:port (a host name or address, and "
                "a port from 1 to 65535)"
            )
    twice = next((a for i, a in enumerate(addresses) if a in addresses[:i]), None)
    if twice:
        return f"--worker-hosts names {twice} twice: each worker needs its own address"
    if "worker_index" not in given:
        raw = env.get(JOB_COMPLETION_INDEX, "").strip()
        if raw:
            try:
                config.worker_index = int(raw)
            except ValueError:
                return f"{JOB_COMPLETION_INDEX}={raw!r} is not a whole number; pass --worker-index"
            if not 0 <= config.worker_index < n:
                return (
                    f"{JOB_COMPLETION_INDEX}={raw} (this pod's index) is not a worker of "
                    f"--workers {n} (0 to {n - 1}); the Job's completions must equal --workers"
                )
    if not 0 <= config.worker_index < n:
        index = config.worker_index
        return f"--worker-index {index} is not a worker of --workers {n} (0 to {n - 1})"
    return None


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = ArgumentParser(
        prog="python -m trainer",
        description="Fine-tune an ImageNet-pretrained Inception-v3 on a dataset written by "
        "`python -m preprocess`. Started again on the same --run-dir, it resumes from the "
        "latest checkpoint with the saved hyperparameters. `python -m trainer weights --help`: "
        "write ImageNet weights for --weights where Keras' download host is unreachable.",
        # Only flags given on the command line land in the namespace, so a resumed run can
        # tell "not given" (take the saved value) from "given" (must agree with it).
        argument_default=argparse.SUPPRESS,
    )
    g = p.add_argument_group("data and run")
    g.add_argument("--data", required=True, help="dataset URI (local path or gs://)")
    g.add_argument("--run-dir", required=True, help="run directory URI (local path or gs://)")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive_int, help="training steps in total")
    length.add_argument(
        "--epochs",
        type=_positive_float,
        help=f"passes over the training split (default {DEFAULT_EPOCHS:g} if --steps is not given)",
    )

    g = p.add_argument_group("model")
    g.add_argument("--image-size", type=_image_size, help=f"input pixels (default {d.image_size})")
    g.add_argument(
        "--fine-tune",
        choices=FINE_TUNE_MODES,
        help="train the whole network, or only the new head (default all)",
    )
    g.add_argument(
        "--head-init",
        choices=HEAD_INITS,
        help="fit: before the first step, fit the new head exactly to the frozen backbone's "
        "features of the training images (a linear probe, seconds), so that training starts "
        "from it; random: Keras' random initialisation; auto: fit with pretrained --weights, "
        "random with --weights none (default auto)",
    )
    g.add_argument(
        "--head-warmup-steps",
        type=_non_negative_int,
        help="with --fine-tune all: train only the head for this many steps first (default 0)",
    )
    g.add_argument(
        "--weights",
        help="backbone start: imagenet (Keras' download, cached), none (random), or the URI of "
        "a weights file such as Keras' inception_v3_..._notop.h5 (default imagenet)",
    )
    g.add_argument("--dropout", type=_fraction, help=f"before the head (default {d.dropout})")

    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=_batch_size, help=f"global batch (default {d.batch_size})")
    g.add_argument(
        "--lr",
        type=_positive_float,
        help=f"initial learning rate (default {PRETRAINED_ALL_LR:g} with --fine-tune all from "
        f"pretrained weights, else {d.lr})",
    )
    g.add_argument("--optimizer", choices=OPTIMIZERS, help=f"(default {d.optimizer})")
    g.add_argument(
        "--momentum", type=_fraction, help=f"rmsprop and sgd momentum (default {d.momentum})"
    )
    g.add_argument("--rmsprop-rho", type=_fraction, help=f"rmsprop decay (default {d.rmsprop_rho})")
    g.add_argument("--rmsprop-epsilon", type=_positive_float, help=f"(default {d.rmsprop_epsilon})")
    g.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        help="exponential: multiply by --lr-decay-factor every --lr-decay-epochs (staircase); "
        "cosine: decay to 0 over the run after --warmup-epochs (default exponential)",
    )
    g.add_argument("--lr-decay-factor", type=_positive_float, help=f"(default {d.lr_decay_factor})")
    g.add_argument(
        "--lr-decay-epochs", type=_positive_float, help=f"(default {d.lr_decay_epochs:g})"
    )
    g.add_argument(
        "--warmup-epochs",
        type=_non_negative_float,
        help="linear learning-rate warm-up, with --lr-schedule cosine (default 0)",
    )
    g.add_argument("--label-smoothing", type=_fraction, help=f"(default {d.label_smoothing})")
    g.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        help=f"L2 penalty on the weights, as in the classic recipe (default {d.weight_decay:g})",
    )
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto: mixed float16 on GPUs, float32 on CPUs (default auto)",
    )
    g.add_argument(
        "--seed",
        type=trainer_args.seed,
        help=f"seed for the initial head and the input order, 0 to {trainer_args.MAX_SEED}",
    )

    g = p.add_argument_group("checkpoints, logs and metrics")
    g.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        help=f"save every this many steps (default {d.checkpoint_every})",
    )
    g.add_argument(
        "--checkpoint-minutes",
        type=_positive_float,
        help=f"and at least every this many minutes (default {d.checkpoint_minutes:g})",
    )
    g.add_argument(
        "--keep-checkpoints",
        type=_positive_int,
        help=f"keep the newest this many (default {d.keep_checkpoints})",
    )
    g.add_argument(
        "--log-every",
        type=_positive_int,
        help=f"one log line and TensorBoard scalars every this many steps (default {d.log_every})",
    )
    g.add_argument(
        "--metrics-port",
        type=_port,
        help="serve Prometheus metrics on this port; 0: no server (default 0)",
    )
    g.add_argument("--xla", action="store_true", help="compile the training step with XLA")
    g.add_argument(
        "--shuffle-buffer", type=_positive_int, help=f"records (default {d.shuffle_buffer})"
    )
    g.add_argument(
        "--force",
        action="store_true",
        help="resume even where a flag contradicts the run's saved hyperparameters (the new "
        "value wins and the change is recorded in hparams.json)",
    )
    g.add_argument(
        "--exit-code-on-stop",
        type=args.int_between(0, 255, "a process exit code"),
        help="exit code after a SIGTERM that stopped an unfinished run (default 0; Kubernetes "
        "Jobs use 143, so that an evicted pod is not counted as a completion)",
    )
    g.add_argument(
        "--lease-seconds",
        type=trainer_args.lease_seconds,
        help="the run's writer lease expires this long after its holder stopped renewing it "
        "(a killed trainer); a second trainer waits that long at most "
        f"(default {d.lease_seconds:g})",
    )
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    g = p.add_argument_group(
        "several workers (one run across processes or pods, MultiWorkerMirroredStrategy)"
    )
    g.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="worker processes that train this run together, each with its own GPUs; the "
        f"global --batch-size is split over all of them (default 1, at most {MAX_WORKERS})",
    )
    g.add_argument(
        "--worker-hosts",
        metavar="HOSTS",
        help="with --workers N > 1: N comma-separated host:port addresses (entry i is worker "
        f"i), or one host:port pattern with {INDEX_PLACEHOLDER}, e.g. "
        f"flowers-lr-0-01-{INDEX_PLACEHOLDER}.flowers-lr-0-01:2222",
    )
    g.add_argument(
        "--worker-index",
        type=_non_negative_int,
        metavar="I",
        help=f"this process's worker, 0 to N-1; 0 is the chief, the only one that writes the "
        f"run dir (default: ${JOB_COMPLETION_INDEX}, which Kubernetes sets in Indexed Jobs, "
        f"else 0). With ${TF_CONFIG} set, the workers come from it instead",
    )
    return p


def parse_args(
    argv: list[str] | None, env: Mapping[str, str] | None = None
) -> tuple[TrainConfig, set[str]]:
    """The configuration and the names of the fields given on the command line.

    `env` (default: the process's) supplies JOB_COMPLETION_INDEX and TF_CONFIG.
    """
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    config = TrainConfig(**given)
    if config.weights.lower() in ("imagenet", "none"):
        config.weights = config.weights.lower()
    if "lr" not in given and config.fine_tune == "all" and config.weights != "none":
        config.lr = PRETRAINED_ALL_LR  # not in `given`: a resumed run keeps its saved lr
    problem = check_workers(config, set(given), os.environ if env is None else env)
    if problem:
        parser.error(problem)
    return config, set(given)
