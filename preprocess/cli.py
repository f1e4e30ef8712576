"""Command line of `python -m preprocess`: image folders -> sharded TFRecords + dataset.json."""

from __future__ import annotations

import argparse

from common.args import ArgumentParser, non_negative_int, positive_int
from common.cli import UserError, setup_logging
from preprocess import build, parts, pool

DEFAULT_MAX_SIDE = 500

DESCRIPTION = """\
Turn image folders (one sub-folder per class, local or gs://) into sharded TFRecords, labels.txt
and dataset.json, written last. Images are recognised by content (JPEG, PNG, GIF, BMP, WebP,
TIFF), turned upright, made RGB and stored as JPEG; files that are not images are skipped and
listed with a reason.

Other commands:
  python -m preprocess sample --out DIR   make a small sample image folder to try things on
  python -m preprocess adopt --dir URI    write dataset.json for shards of the classic
                                          build_image_data.py
"""


def parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m preprocess",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--train-dir", required=True, metavar="DIR", help="training images: DIR/<class>/<images>"
    )
    p.add_argument(
        "--val-dir", required=True, metavar="DIR", help="validation images: DIR/<class>/<images>"
    )
    p.add_argument(
        "--out", required=True, metavar="URI", help="dataset folder to write (local path or gs://)"
    )
    p.add_argument(
        "--labels-file",
        metavar="FILE",
        help="class names, one per line, in class-id order (default: sorted train sub-folders)",
    )
    p.add_argument(
        "--train-shards", type=positive_int, metavar="N", help="default: ~1,000 images a shard"
    )
    p.add_argument(
        "--val-shards", type=positive_int, metavar="N", help="default: ~1,000 images a shard"
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        default=pool.default_workers(),
        help="worker processes (default: all cores, here %(default)s)",
    )
    p.add_argument(
        "--max-side",
        type=non_negative_int,
        default=DEFAULT_MAX_SIDE,
        metavar="PX",
        help="downscale images whose longer side exceeds PX; never upscales; 0 keeps full size "
        "(default: %(default)s, about ImageNet's own size, ample for training at 299 px)",
    )
    p.add_argument("--strict", action="store_true", help="fail if any file had to be skipped")
    p.add_argument(
        "--task-index",
        type=non_negative_int,
        metavar="I",
        help="this task's part when the work is split across processes or pods "
        "(default: $JOB_COMPLETION_INDEX of a Kubernetes Indexed Job, else 0)",
    )
    p.add_argument(
        "--task-count",
        type=positive_int,
        metavar="K",
        default=1,
        help="how many tasks share the work; the last one to finish writes dataset.json",
    )
    p.add_argument("--verbose", action="store_true", help="log debug detail")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    build.build(options(args))
    return 0


def options(args: argparse.Namespace) -> build.Options:
    """The run's options from parsed arguments, checked for sense."""
    for flag in ("train_dir", "val_dir", "out"):
        if not getattr(args, flag).strip():
            raise UserError(f"--{flag.replace('_', '-')} is empty.")
    task_index = args.task_index
    if task_index is None:
        task_index = parts.task_index_default()
        if task_index < 0:
            raise UserError("JOB_COMPLETION_INDEX is set but is not a whole number.")
    if task_index >= args.task_count:
        raise UserError(
            f"task index {task_index} is out of range for --task-count {args.task_count} "
            f"(indexes run from 0 to {args.task_count - 1})."
        )
    return build.Options(
        train_dir=args.train_dir,
        val_dir=args.val_dir,
        out=args.out,
        labels_file=args.labels_file,
        train_shards=args.train_shards,
        val_shards=args.val_shards,
        workers=args.workers,
        max_side=args.max_side,
        strict=args.strict,
        task_index=task_index,
        task_count=args.task_count,
    )
