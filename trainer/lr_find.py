"""`python -m trainer lr-find`: fastai's learning-rate range test, on the model a run trains.

A sweep is only as good as its grid, and the seed's grid came from a person reading
TensorBoard. The range test reads it from one short run instead: the lr rises geometrically
from --start-lr to --end-lr over --num-steps steps, each step's own loss is smoothed, and the
test stops once the smoothed loss passes --diverge times its minimum (common/lr_range.py has
the maths, the file and the reasons behind fastai's choices).

It takes every training flag of `python -m trainer` and builds the model exactly as a run with
those flags starts (the same weights, the head fitted to the frozen backbone first with
pretrained ones, the same optimizer, batch, fine-tune mode, weight decay, label smoothing and
augmentation), so the curve describes the sweep those flags will run. Only the lr differs;
--lr, --steps/--epochs and the lr schedule flags are accepted (a sweep's flags pass unchanged)
and change nothing here. The weights are thrown away: no checkpoint, no export, no
complete.json, no hparams.json. It writes `<run-dir>/lr_find.json` last, after
`lr_find.png` and the TensorBoard events under `<run-dir>/lr_find/`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
from typing import Any

from common import args, layout, lr_range, storage
from common.cli import UserError, setup_logging
from trainer import config as trainer_config
from trainer.config import TrainConfig, check_workers
from trainer.prepare import Plan, prepare

log = logging.getLogger("trainer")

MAX_NUM_STEPS = 10_000  # fastai's test is 100 steps; past this a typo costs hours
# The range test's own flags: parsed beside the trainer's, never part of a TrainConfig.
RANGE_FLAGS = ("start_lr", "end_lr", "num_steps", "diverge", "suggest")
# What lr_find.json records of the training flags: those that shape the curve.
RECORDED_FLAGS = (
    "image_size", "fine_tune", "head_init", "weights", "dropout", "batch_size", "optimizer",
    "momentum", "rmsprop_rho", "rmsprop_epsilon", "label_smoothing", "weight_decay", "precision",
    "seed", "shuffle_buffer", "xla",
)  # fmt: skip
# How each stop reads in the summary line.
STOP_PHRASES = {
    lr_range.DIVERGED: "smoothed loss {diverge:g}x its minimum",
    lr_range.NOT_FINITE: "the loss was not a number",
    lr_range.END: "the end of the range, not diverged",
}


@dataclasses.dataclass(frozen=True)
class Options:
    """The range test's flags (the training flags are a TrainConfig)."""

    settings: lr_range.Settings
    suggest: str = lr_range.VALLEY


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The trainer's own parser (every training flag, the same bounds and messages), plus
    the range test's flags."""
    p = trainer_config.build_parser()
    p.prog = "python -m trainer lr-find"
    p.description = (
        "fastai's learning-rate range test: train a few steps with the lr rising "
        "geometrically from --start-lr to --end-lr, smooth each step's loss, stop when it "
        "diverges, and suggest an lr. Takes the training flags of `python -m trainer` (the "
        "test then describes the sweep they run); --lr, --steps/--epochs and the lr schedule "
        "flags change nothing here. Writes RUN_DIR/lr_find.json, lr_find.png and TensorBoard "
        "events under RUN_DIR/lr_find/; no checkpoint, no export: the weights are thrown away."
    )
    g = p.add_argument_group("range test (lr-find only)")
    g.add_argument(
        "--start-lr",
        type=args.positive_float,
        help=f"the first step's learning rate (default {lr_range.START_LR:g})",
    )
    g.add_argument(
        "--end-lr",
        type=args.positive_float,
        help=f"the last step's, above --start-lr (default {lr_range.END_LR:g})",
    )
    g.add_argument(
        "--num-steps",
        type=args.int_between(
            10, MAX_NUM_STEPS, "fewer leave no points to read once the first tenth and the "
            f"last {lr_range.SKIP_END} are set aside"
        ),
        help=f"steps from --start-lr to --end-lr (default {lr_range.NUM_STEPS})",
    )  # fmt: skip
    g.add_argument(
        "--diverge",
        type=args.checked(float, lambda v: v > 1, "a number greater than 1 (a multiple of the "
                          "smoothed loss's minimum)"),
        help="stop once the smoothed loss passes this many times its minimum (default "
        f"{lr_range.DIVERGE:g}); a loss that is not a number always stops it",
    )  # fmt: skip
    g.add_argument(
        "--suggest",
        choices=lr_range.SUGGESTION_METHODS,
        help="the suggestion lr_find.json names as the lr: valley, the middle of the longest "
        "falling stretch (fastai's default); steep, the steepest descent; minimum, the lr of "
        f"the lowest loss / 10 (default {lr_range.VALLEY})",
    )
    return p


def parse_args(argv: list[str]) -> tuple[Options, TrainConfig, set[str]]:
    """The range test's options, the training configuration, and the training flags given.

    A bad value is one `error:` line and exit 2, as for `python -m trainer`.
    """
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    ours = {name: given.pop(name) for name in RANGE_FLAGS if name in given}
    suggest = ours.pop("suggest", lr_range.VALLEY)
    settings = lr_range.Settings(**ours)
    if settings.end_lr <= settings.start_lr:
        parser.error(
            f"--end-lr {settings.end_lr:g} must be greater than --start-lr "
            f"{settings.start_lr:g}: the test raises the lr from one to the other"
        )
    if given.get("workers", 1) > 1:
        parser.error(
            "lr-find runs in one process: drop --workers (the test needs the sweep's global "
            "--batch-size, not its workers)"
        )
    config = TrainConfig(**given)
    if config.weights.lower() in ("imagenet", "none"):  # as trainer.config.parse_args does
        config.weights = config.weights.lower()
    # No environment: TF_CONFIG or an Indexed Job's index describe a training run's workers,
    # and this is one process whatever they say.
    problem = check_workers(config, set(given), {})
    if problem:
        parser.error(problem)
    return Options(settings, suggest), config, set(given)


# ---------------------------------------------------------------- the command


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    options, config, given = parse_args(argv)
    setup_logging(config.verbose)
    config.run_dir = storage.normalize(config.run_dir)
    _refuse_a_training_run(config.run_dir)
    plan = prepare(config, given)
    events_dir = storage.join(config.run_dir, lr_range.EVENTS)
    from trainer import lr_find_steps  # TensorFlow starts here, after every check passed

    outcome = lr_find_steps.run(plan, options.settings, events_dir)
    recorder = outcome.recorder
    assert recorder.stopped is not None  # the loop runs until the recorder says stop
    curve = recorder.points
    smoothed = [p.smoothed if p.smoothed is not None else math.nan for p in curve]
    record = lr_range.LrFind(
        data=config.data,
        settings=options.settings,
        trainer_flags=_recorded_flags(plan, outcome.head_init, outcome.devices),
        curve=curve,
        stopped=recorder.stopped,
        suggestions=lr_range.suggest([p.lr for p in curve], smoothed, options.settings.num_steps),
        suggested=options.suggest,
        steps_seconds=round(outcome.steps_seconds, 3),
        created=layout.now(),
    )
    summary = _summary(record)
    from trainer import lr_find_plot

    picture = lr_find_plot.draw(record)
    outcome.events.finish(picture, summary, recorder.stopped.step)
    png_uri = storage.join(config.run_dir, lr_range.PLOT)
    storage.write_bytes(png_uri, lr_find_plot.png(record))
    record.seconds = round(time.perf_counter() - started, 3)
    record.save(config.run_dir)  # last: its presence says the test finished
    log.info("%s", summary)
    log.info("wrote %s, %s and TensorBoard events under %s (%.1f s in all)",
             lr_range.uri(config.run_dir), png_uri, events_dir, record.seconds)  # fmt: skip
    if not record.suggestions:
        stop = recorder.stopped
        raise UserError(
            f"the range test stopped at step {stop.step} ({stop.why}), before the "
            f"{lr_range.steps_needed(options.settings.num_steps)} steps a suggestion needs with "
            f"--num-steps {options.settings.num_steps}; its curve is in "
            f"{lr_range.uri(config.run_dir)}. Start lower (--start-lr) or take more steps."
        )
    return 0


def _refuse_a_training_run(run_dir: str) -> None:
    """The test starts from --weights, never from a run's checkpoints, and must not mix its
    files into a run whose saved hyperparameters would then override its flags."""
    run = layout.RunDir(run_dir)
    if run.has_hparams() or run.is_complete() or run.latest_checkpoint_step() is not None:
        raise UserError(
            f"{run_dir} holds a training run ({layout.HPARAMS} or checkpoints); the range test "
            "starts from --weights, not from a run: give it a --run-dir of its own."
        )


def _recorded_flags(plan: Plan, head_init: str, devices: str) -> dict[str, Any]:
    config = plan.config
    flags: dict[str, Any] = {name: getattr(config, name) for name in RECORDED_FLAGS}
    flags["head_init"] = head_init  # "auto" resolved: what the run actually does
    flags.update(
        {
            "weights_file": plan.hparams.get("weights_file"),
            "dataset": plan.manifest.name,
            "num_classes": plan.manifest.num_classes,
            "train_examples": plan.manifest.count("train"),
            "devices": devices,
        }
    )
    return flags


def _summary(record: lr_range.LrFind) -> str:
    """The one line that says what the test found, numbers with their units."""
    stop = record.stopped
    phrase = STOP_PHRASES[stop.reason].format(diverge=record.settings.diverge)
    line = (
        f"lr-find: {len(record.curve)} steps in {record.steps_seconds:.1f} s, stopped at lr "
        f"{stop.lr:.3g} ({phrase})"
    )
    if not record.suggestions:
        return line + "; no suggestion: the curve is too short to read"
    said = ", ".join(
        f"{lr_range.SUGGESTION_LABELS[name]} {found.lr:.3g}"
        for name, found in record.suggestions.items()
    )
    return f"{line}; suggestions: {said}; suggested lr {record.lr:.3g} ({record.suggested})"
