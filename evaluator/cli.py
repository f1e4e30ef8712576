"""Command line of the evaluator.

python -m evaluator (--run-dir URI | --sweep-dir URI) [--once | --interval SECONDS]
python -m evaluator predict --model URI IMAGE...
"""

from __future__ import annotations

import logging
import sys

from common import storage
from common.args import ArgumentParser, port, positive_float, positive_int
from common.cli import UserError, setup_logging

log = logging.getLogger("evaluator")


def eval_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m evaluator",
        description="Evaluate every checkpoint of a run or a sweep on the validation split "
        "(CPU only), rank the runs in leaderboard.json and export the best model. "
        "`python -m evaluator predict --help` for predictions of an exported model.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--run-dir", help="one run: runs/<run> of a sweep, or a trainer --run-dir")
    where.add_argument("--sweep-dir", help="a sweep: every run under <sweep>/runs/")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--once", action="store_true", help="evaluate the latest checkpoint of each run, then exit"
    )
    mode.add_argument(
        "--interval",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="watch mode: look for new checkpoints this often (default 60)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="watch mode: stop after this long without a new checkpoint",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=32, help="evaluation batch size (default 32)"
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="watch mode: when every run is done, stay up (serving metrics) and evaluate runs "
        "added to the sweep later; for a long-running evaluator in a cluster",
    )
    parser.add_argument(
        "--keep-best",
        type=positive_int,
        default=3,
        metavar="K",
        help="keep the newest K exports under best/ (default 3), never removing the best",
    )
    parser.add_argument(
        "--metrics-port", type=port, metavar="N", help="serve Prometheus metrics on this port"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def predict_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m evaluator predict",
        description="Print the top labels with probabilities for image files (local or gs://).",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="an exported SavedModel: <run>/export or a version under best/",
    )
    parser.add_argument("--top-k", type=positive_int, default=5)
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    return parser


def main(argv: list[str] | None = None) -> int:
    storage.bound_tensorflow_gcs()  # before TensorFlow's gs:// reads its retry settings
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["predict"]:
        return predict_main(argv[1:])
    return eval_main(argv)


def predict_main(argv: list[str]) -> int:
    args = predict_parser().parse_args(argv)
    setup_logging()
    from evaluator.predict import predict

    for path, top in zip(args.images, predict(args.model, args.images, args.top_k), strict=True):
        print(path)
        for label, probability in top:
            print(f"  {probability:7.2%}  {label}")
    return 0


def eval_main(argv: list[str]) -> int:
    args = eval_parser().parse_args(argv)
    setup_logging(args.verbose)
    target = storage.normalize(args.sweep_dir or args.run_dir)
    if args.once and not storage.is_dir(target):
        raise UserError(f"{target} does not exist.")
    if args.keep_running and args.once:
        raise UserError("--keep-running only applies to watch mode, not --once.")
    storage.check_writable_location(target)
    from evaluator.metrics import EvalMetrics

    metrics = EvalMetrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port)
        log.info("serving Prometheus metrics on port %d", args.metrics_port)

    from evaluator import watch  # TensorFlow loads here, after the arguments are checked
    from evaluator.signals import Shutdown

    options = watch.Options(
        target=target,
        sweep=bool(args.sweep_dir),
        once=args.once,
        interval=args.interval,
        timeout=args.timeout,
        batch_size=args.batch_size,
        keep_running=args.keep_running,
        metrics=metrics,
        keep_best=args.keep_best,
        # SIGTERM (a rollout, a drain) in watch mode: finish the current write, exit 0.
        shutdown=Shutdown() if args.once else Shutdown().install(),
    )
    if args.once:
        board, finished = watch.run_once(options), True
    else:
        board, finished = watch.watch(options)
    print_verdict(board)
    return 0 if finished or options.shutdown.requested else 3


def print_verdict(board: dict) -> None:
    for row in board.get("runs", []):
        top5 = f"{row['best_top5']:.4f}" if row.get("best_top5") is not None else "n/a"
        print(
            f"#{row['rank']} {row['run']}: top-1 {row['best_top1']:.4f}, top-5 {top5}, "
            f"loss {row['best_loss']:.4f} at step {row['best_step']} "
            f"(last evaluated step {row['last_step']}{', complete' if row['complete'] else ''})"
        )
    for row in board.get("stopped", []):
        print(f"stopped {row['run']} at step {row['step']} ({row['rule']}): {row['reason']}")
    for row in board.get("broken", []):
        print(f"broken {row['run']}: {row['reason']}")
    best = board.get("best")
    if best:
        print(f"best checkpoint: {best['run']} step {best['step']}, exported to {best['export']}")
