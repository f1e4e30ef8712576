"""The range test's TensorFlow part: the run's own model and step, with the lr a variable.

Everything that makes a run's first step what it is comes from the training loop itself
(trainer.loop.train: devices and precision, the model and its head initialisation; step.py:
augmentation, label smoothing, weight decay), so the curve is the one the sweep will meet. Only
the optimizer is new: the same kind and settings (make_optimizer), reading its learning rate
from a variable that each step sets to the test's next lr, instead of following the run's
schedule.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from common import data, lr_range, storage
from common.cli import UserError, first_line
from trainer.config import TrainConfig
from trainer.loop import train
from trainer.loop.optimization import make_optimizer
from trainer.loop.step import make_train_step
from trainer.prepare import Plan
from trainer.workers import ALONE

log = logging.getLogger("trainer")

PROGRESS_EVERY = 10  # one log line every this many steps (and at the first and the last)


class Events:
    """TensorBoard events of the test under <run-dir>/lr_find/: per step the raw and the
    smoothed loss and the lr (x axis: the step; the lr is a scalar beside them), at the end the
    plot and the summary line. Tags start with lr_find/ so that in a sweep's TensorBoard they
    never share a chart with the runs' training loss."""

    def __init__(self, uri: str) -> None:
        self.writer = tf.summary.create_file_writer(uri)

    def step(self, point: lr_range.Point, loss: float) -> None:
        with self.writer.as_default(step=point.step):
            tf.summary.scalar("lr_find/loss", loss)
            if point.smoothed is not None:
                tf.summary.scalar("lr_find/smoothed_loss", point.smoothed)
            tf.summary.scalar("lr_find/learning_rate", point.lr)

    def finish(self, picture: Image.Image, summary: str, step: int) -> None:
        with self.writer.as_default(step=step):
            tf.summary.image(
                "lr_find/plot",
                np.asarray(picture.convert("RGB"))[None],
                description="smoothed training loss against learning rate (log scale), the "
                "suggestions marked, the suggested lr dashed",
            )
            tf.summary.text("lr_find/summary", summary)
        self.writer.close()


@dataclasses.dataclass
class Outcome:
    recorder: lr_range.Recorder  # the curve and why it stopped
    steps_seconds: float
    head_init: str  # "fit" or "random": --head-init auto resolved
    devices: str  # e.g. "float32 on CPU"
    events: Events  # still open: the caller adds the plot


def run(plan: Plan, settings: lr_range.Settings, events_dir: str) -> Outcome:
    """Build the run's model (head fitted first where a run fits it), then step with the lr
    rising until the recorder says stop. Nothing is saved but the events."""
    config = plan.config
    strategy, mixed, devices = train._devices(config.precision, None, ALONE)
    keras.utils.set_random_seed(config.seed)  # as a fresh run seeds itself
    with strategy.scope():
        trainee = train._build(plan, mixed)
        lr = tf.Variable(settings.start_lr, trainable=False, dtype=tf.float32, name="lr_find")
        # Replaces _build's optimizer (and frees its slots): the same kind and settings, its
        # learning rate read from `lr` inside every step, as _build's reads the run's schedule.
        trainee.optimizer = make_optimizer(config, lambda: lr, mixed)
        trainee.optimizer.build(trainee.all_vars)
    head_init = train.head_init(config)
    if head_init == "fit":
        train._fit_head(plan, trainee.model, True)
    batches = data.train_dataset(
        config.data,
        plan.manifest,
        config.image_size,
        config.batch_size,
        shuffle_buffer=config.shuffle_buffer,
        seed=config.seed,
    )
    iterator = iter(strategy.experimental_distribute_dataset(batches))
    # The cross-entropy of this step's batch (label smoothing included, the weight penalty
    # not: fastai's curve is the data loss, and the penalty would shift the divergence test).
    train_step = make_train_step(
        model=trainee.model,
        optimizer=trainee.optimizer,
        strategy=strategy,
        variables=trainee.all_vars,
        step=trainee.step,
        num_classes=plan.manifest.num_classes,
        global_batch=config.batch_size,
        label_smoothing=config.label_smoothing,
        weight_decay=config.weight_decay,
        jit_compile=config.xla,
    )
    events = Events(events_dir)
    recorder = lr_range.Recorder(settings)
    log.info(
        "lr-find on %s: %d classes, %d examples, batch %d, %s, fine-tune %s, weights %s, "
        "head %s, %s; lr from %g to %g over %d steps, stopping at %gx the smoothed loss's "
        "minimum",
        config.data, plan.manifest.num_classes, plan.manifest.count("train"), config.batch_size,
        config.optimizer, config.fine_tune, config.weights, head_init, devices,
        settings.start_lr, settings.end_lr, settings.num_steps, settings.diverge,
    )  # fmt: skip
    started = time.perf_counter()
    try:
        while not recorder.done:
            lr.assign(recorder.next_lr())
            loss = float(train_step(iterator))  # waits for the step: each one's own loss
            point = recorder.add(loss)
            events.step(point, loss)
            _progress(recorder, point, time.perf_counter() - started)
    except tf.errors.DataLossError as exc:
        raise data.damaged_shard_error(config.data, plan.manifest, "train", exc) from exc
    except tf.errors.ResourceExhaustedError as exc:
        raise out_of_memory(exc, config) from exc
    events.writer.flush()
    return Outcome(recorder, time.perf_counter() - started, head_init, devices, events)


def _progress(recorder: lr_range.Recorder, point: lr_range.Point, elapsed: float) -> None:
    total = recorder.settings.num_steps
    if point.step == 1:
        log.info("lr-find step 1 of %d: lr %.3g, loss %s (%.1f s with tracing the step)",
                 total, point.lr, _number(point.loss), elapsed)  # fmt: skip
    elif point.step % PROGRESS_EVERY == 0 or recorder.done:
        log.info(
            "lr-find step %d of %d: lr %.3g, loss %s, smoothed %s (%.2f s/step)",
            point.step, total, point.lr, _number(point.loss), _number(point.smoothed),
            elapsed / point.step,
        )  # fmt: skip
    if recorder.stopped is not None and recorder.stopped.reason != lr_range.END:
        log.info("lr-find stopped: %s", recorder.stopped.why)


def _number(value: float | None) -> str:
    return "not a number" if value is None else f"{value:.4g}"


def out_of_memory(exc: BaseException, config: TrainConfig) -> Exception:
    """TensorFlow raises ResourceExhaustedError for a full disk (a summary write) as well as
    for memory; only the message tells them apart."""
    full = storage.disk_full_error(exc, config.run_dir)
    if full is not None:
        return full
    return UserError(
        f"out of memory with --batch-size {config.batch_size} at --image-size "
        f"{config.image_size} ({first_line(exc)}); try a smaller batch (a sweep with that "
        "batch would run out too)."
    )
