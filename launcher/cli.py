"""Command lines of `python -m launcher`: parsers only, and the dispatch to each command.

Imports stay light here (argparse, common.args): the kubernetes client, YAML and the storage
client load inside the command that needs them, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys

from common import trainer_args
from common.args import (
    ArgumentParser,
    int_between,
    non_negative_float,
    positive_float,
    positive_int,
)
from common.layout import EARLY_STOP_RULES
from launcher import trainer_flags, validators

PROG = "python -m launcher"
BACKENDS = ("local", "kubernetes")


def _parser(name: str, description: str) -> ArgumentParser:
    return ArgumentParser(prog=f"{PROG} {name}", description=description, allow_abbrev=False)


def _add_values(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster settings (the Helm chart's values format)")
    g.add_argument(
        "-f", "--values", action="append", default=[], metavar="FILE",
        help="a values file like charts/inception-finetune/values.yaml (repeatable; later "
        "files win); defaults come from that file",
    )  # fmt: skip
    g.add_argument("--gpus", type=_non_negative, help="GPUs per trainer (trainer.gpus; 0: CPU)")
    g.add_argument("--image-tag", metavar="TAG", help="tag of both images (image.*.tag)")
    g.add_argument("--queue", metavar="NAME", help="Kueue LocalQueue (kueue.queueName)")
    g.add_argument(
        "--eval-interval", type=positive_float, metavar="SECONDS",
        help="the evaluator's pause between rounds with nothing new (evaluator.interval; "
        "default 60 on Kubernetes, 5 with the local backend)",
    )  # fmt: skip


def _add_cluster(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster")
    g.add_argument("--namespace", "-n", help="namespace (default: the kubeconfig context's)")
    g.add_argument("--context", help="kubeconfig context (default: the current one)")


def _add_early_stop(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("early stopping (common.early_stop; values: earlyStop.*)")
    g.add_argument(
        "--early-stop", choices=EARLY_STOP_RULES, metavar="|".join(EARLY_STOP_RULES),
        help="stop losing runs early: median (below the median of the others' running "
        "averages), asha (successive halving: only the top 1/eta go on at each rung); "
        "default none",
    )  # fmt: skip
    g.add_argument(
        "--grace", type=positive_int, metavar="STEPS",
        help="no run is stopped before this step; asha's first rung (default: a tenth of "
        "the run's steps)",
    )  # fmt: skip
    g.add_argument(
        "--eta", type=int_between(2, 100, "asha's reduction factor"), metavar="N",
        help="asha: keep the top 1/N at each rung; rungs N times apart (default 3)",
    )  # fmt: skip
    g.add_argument(
        "--patience", type=_non_negative, metavar="STEPS",
        help="also stop a run whose best result is STEPS steps older than its latest, the best "
        "run included (its best checkpoint stays); 0: never (the default, but for tune: three "
        "grace periods)",
    )  # fmt: skip


def _non_negative(text: str) -> int:
    from common.args import non_negative_int

    return non_negative_int(text)


MAX_WORKERS = trainer_args.MAX_WORKERS  # the trainer's bound, and the chart's (values.schema.json)


def _add_launch(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend", choices=BACKENDS, default="local",
        help="local: trainer and evaluator processes on this machine (default); kubernetes: "
        "one Job per learning rate, an evaluator Deployment and TensorBoard",
    )  # fmt: skip
    p.add_argument(
        "--workers", type=trainer_args.workers,
        metavar="N",
        help="train each run with N workers together (TensorFlow's MultiWorkerMirroredStrategy; "
        "the global --batch-size is split over them): kubernetes: an Indexed Job of N pods "
        "behind a headless Service, the GPUs of trainer.gpus in each; local: N processes "
        "(trainer.workers; default 1)",
    )  # fmt: skip
    p.add_argument(
        "--dry-run", action="store_true",
        help="print what would run (kubernetes: every object as YAML for `kubectl apply -f -`) "
        "and write nothing; the bucket and the cluster are not contacted",
    )  # fmt: skip
    p.add_argument(
        "--parallel", type=positive_int, metavar="N",
        help="local: trainers at a time (default: what the cores and memory allow)",
    )  # fmt: skip
    p.add_argument(
        "--logs-dir", metavar="DIR",
        help="local: where each child's log goes (default: <out>/logs for a local --out, "
        "./logs/<name> for gs://)",
    )  # fmt: skip
    _add_values(p)
    _add_cluster(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def sweep_parser() -> ArgumentParser:
    p = _parser(
        "sweep",
        "Launch one trainer per learning rate, an evaluator and TensorBoard on a sweep "
        "directory: on this machine, or on a Kubernetes cluster. Launching the same sweep "
        "again resumes it: complete runs are not retrained.",
    )
    _add_data_out(p)
    p.add_argument(
        "--lrs", type=validators.learning_rates, metavar="LR,LR,...",
        help="learning rates, e.g. 0.1,0.01,0.001",
    )  # fmt: skip
    _add_name(p)
    _add_launch(p)
    _add_early_stop(p)
    trainer_flags.add_to(p)
    return p


def _add_data_out(p: ArgumentParser) -> None:
    p.add_argument("--data", metavar="URI", help="dataset (made by python -m preprocess)")
    p.add_argument("--out", metavar="URI", help="sweep directory; its runs go to <out>/runs/")


def _add_name(p: ArgumentParser) -> None:
    p.add_argument(
        "--name",
        help="sweep name for the cluster objects (default: the --out folder's name, made "
        "Kubernetes-safe)",
    )


def tune_parser() -> ArgumentParser:
    p = _parser(
        "tune",
        "Find the learning rate without a human: a range test (python -m trainer lr-find), "
        "then a sweep of decades around its suggestion, then refine rounds around the best, "
        "each with early stopping (asha unless --early-stop says otherwise), all into one "
        "sweep directory. The same command resumes it. With --backend kubernetes it creates "
        "a tuner Job that runs all this inside the cluster, and returns.",
    )
    _add_data_out(p)
    p.add_argument(
        "--budget-steps", type=positive_int, metavar="N",
        help="training steps for every stage together, the range test's included; a stage "
        "starts only with steps left, with as many runs as they pay for (tuner.budgetSteps; "
        "default: no limit)",
    )  # fmt: skip
    p.add_argument(
        "--threshold", type=non_negative_float, metavar="TOP1",
        help="stop when a refine round improves the best top-1 by less, or by less than one "
        "standard error of that top-1 on the validation split (tuner.threshold; default 0.01)",
    )  # fmt: skip
    p.add_argument(
        "--max-rounds", type=int_between(0, 20, "refine rounds"), metavar="N",
        help="refine rounds at most (tuner.maxRounds; default 3)",
    )  # fmt: skip
    p.add_argument(
        "--poll-interval", type=positive_float, metavar="SECONDS",
        help="kubernetes: seconds between the tuner's looks at its Jobs and the bucket "
        "(tuner.pollInterval; default 30)",
    )  # fmt: skip
    p.add_argument(
        "--in-cluster", action="store_true",
        help="kubernetes: run the stages from here, inside the cluster (what the tuner Job "
        "runs); without it, the command creates that Job and returns",
    )  # fmt: skip
    _add_name(p)
    _add_launch(p)
    _add_early_stop(p)
    trainer_flags.add_to(p)
    return p


def preprocess_parser() -> ArgumentParser:
    p = _parser(
        "preprocess",
        "Run python -m preprocess as a Kubernetes Job; with --tasks K, an Indexed Job of K "
        "pods that split the work (the last one writes dataset.json).",
    )
    p.add_argument("--train-dir", required=True, metavar="URI", help="train images (gs://)")
    p.add_argument("--val-dir", required=True, metavar="URI", help="validation images (gs://)")
    p.add_argument("--out", required=True, metavar="URI", help="dataset directory (gs://)")
    p.add_argument("--tasks", type=positive_int, default=1, metavar="K", help="pods (default 1)")
    p.add_argument("--name", help="Job name prefix (default: the --out folder's name)")
    p.add_argument("--labels-file", metavar="URI", help="passed to preprocess")
    p.add_argument("--train-shards", type=positive_int, metavar="N", help="passed to preprocess")
    p.add_argument("--val-shards", type=positive_int, metavar="N", help="passed to preprocess")
    p.add_argument("--max-side", type=_non_negative, metavar="PX", help="passed to preprocess")
    p.add_argument("--strict", action="store_true", help="passed to preprocess")
    p.add_argument("--dry-run", action="store_true", help="print the objects as YAML only")
    _add_values(p)
    _add_cluster(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def status_parser() -> ArgumentParser:
    p = _parser(
        "status",
        "A table of a sweep's runs: state, step, best top-1 and its step; the best is marked.",
    )
    p.add_argument("--sweep", required=True, metavar="URI", help="the sweep directory")
    p.add_argument(
        "--backend", choices=BACKENDS, default="local",
        help="kubernetes: add each run's Job state (pending, running, failed and why)",
    )  # fmt: skip
    _add_cluster(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def refine_parser() -> ArgumentParser:
    p = _parser(
        "refine",
        "Propose the next, finer sweep around the best learning rate so far (best 0.01 -> "
        "0.05, 0.02, 0.01, 0.005, 0.002, less those already run); --launch runs it into the "
        "same sweep directory.",
    )
    p.add_argument("--sweep", required=True, metavar="URI", help="the sweep directory")
    p.add_argument("--launch", action="store_true", help="launch the proposed runs")
    _add_launch(p)
    return p


def delete_parser() -> ArgumentParser:
    p = _parser(
        "delete",
        "Delete a sweep's cluster objects (Jobs and their pods, Deployments, Service, "
        "PodMonitor, ServiceAccount), found by their labels. Never touches the bucket.",
    )
    p.add_argument("--sweep", required=True, metavar="NAME", help="the sweep's name")
    _add_cluster(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def record_parser() -> ArgumentParser:
    p = _parser(
        "record-sweep",
        "Add candidates to <out>/sweep.json (creating it); the same content again changes "
        "nothing, another dataset or other trainer flags are an error. Trainer pods run this "
        "as an init container.",
    )
    p.add_argument("--out", required=True, metavar="URI", help="sweep directory")
    p.add_argument("--data", required=True, metavar="URI", help="dataset")
    p.add_argument("--name", required=True, help="sweep name")
    p.add_argument("--lrs", required=True, type=validators.learning_rates, metavar="LR,LR,...")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_early_stop(p)
    trainer_flags.add_to(p)
    return p


COMMANDS = {
    "sweep": (sweep_parser, "launcher.launch", "sweep_main"),
    "tune": (tune_parser, "launcher.tune", "tune_main"),
    "preprocess": (preprocess_parser, "launcher.preprocess_job", "main"),
    "status": (status_parser, "launcher.status", "main"),
    "refine": (refine_parser, "launcher.refine", "main"),
    "delete": (delete_parser, "launcher.remove", "main"),
    "record-sweep": (record_parser, "launcher.launch", "record_main"),
}


def top_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Learning-rate sweeps of the Inception-v3 fine-tuner, on this machine or "
        "on Kubernetes. `python -m launcher COMMAND --help` for each command.",
        allow_abbrev=False,
    )
    p.add_argument("command", choices=list(COMMANDS), help=", ".join(COMMANDS))
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    top = top_parser().parse_args(argv[:1])
    make_parser, module_name, function = COMMANDS[top.command]
    args = make_parser().parse_args(argv[1:])
    from common.cli import setup_logging

    setup_logging(getattr(args, "verbose", False))
    import importlib

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # for the children we start
    return getattr(importlib.import_module(module_name), function)(args)
