"""The training loop: build, resume, train, checkpoint, report, export, mark complete."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import keras
import tensorflow as tf

from common import data, storage
from common.export import export_model
from common.model import backbone_of, build_classifier, head_of
from trainer import run_dir
from trainer.checkpointing import Checkpointer
from trainer.loop.optimization import make_optimizer, make_schedule
from trainer.loop.step import make_penalty, make_train_step
from trainer.metrics import TrainMetrics
from trainer.prepare import Plan
from trainer.signals import StopRequest
from trainer.summaries import TrainSummaries, write_hparams

log = logging.getLogger("trainer")


@dataclasses.dataclass
class Result:
    final_step: int
    complete: bool
    # Throughput after the first logging interval (which pays for tracing and warm-up).
    examples_per_sec: float | None


def _devices(precision: str) -> tuple[tf.distribute.Strategy, bool, str]:
    """Every visible GPU through MirroredStrategy; mixed precision on GPUs unless told."""
    gpus = tf.config.list_physical_devices("GPU")
    mixed = precision == "mixed" or (precision == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    strategy = tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
    where = f"{len(gpus)} GPU(s)" if gpus else "CPU"
    return strategy, mixed, f"{'mixed float16' if mixed else 'float32'} on {where}"


def run(plan: Plan, metrics: TrainMetrics, stop: StopRequest) -> Result:
    config, manifest = plan.config, plan.manifest
    strategy, mixed, where = _devices(config.precision)
    keras.utils.set_random_seed(config.seed + (plan.resume_step or 0))

    with strategy.scope():
        model = build_classifier(
            manifest.num_classes,
            config.image_size,
            weights=plan.weights_path,
            dropout=config.dropout,
            freeze_batchnorm=config.weights != "none",
        )
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        schedule = make_schedule(config, plan.steps_per_epoch, plan.total_steps)
        optimizer = make_optimizer(config, lambda: schedule(step), mixed)
        if config.fine_tune == "head":
            backbone_of(model).trainable = False
        head_vars = head_of(model).trainable_variables
        all_vars = model.trainable_variables
        optimizer.build(all_vars)

    checkpointer = Checkpointer(
        storage.join(config.run_dir, run_dir.CHECKPOINT_DIR),
        tf.train.Checkpoint(model=model, optimizer=optimizer, step=step),
        keep=config.keep_checkpoints,
        every_steps=config.checkpoint_every,
        every_minutes=config.checkpoint_minutes,
        metrics=metrics,
    )
    start = checkpointer.restore_latest() or 0
    if start:
        log.info("resumed from checkpoint at step %d of %d", start, plan.total_steps)
    run_dir.write_hparams(config.run_dir, plan.hparams)
    if plan.hparams_changed:
        write_hparams(config.run_dir, plan.run_name, plan.hparams)
    metrics.global_step.set(start)
    metrics.target_steps.set(plan.total_steps)

    step_args = dict(
        model=model,
        optimizer=optimizer,
        strategy=strategy,
        step=step,
        num_classes=manifest.num_classes,
        global_batch=config.batch_size,
        label_smoothing=config.label_smoothing,
        weight_decay=config.weight_decay,
        jit_compile=config.xla,
    )

    def phase(until: int, variables: list) -> Phase:
        return Phase(
            until,
            make_train_step(variables=variables, **step_args),
            make_penalty(model, variables, config.weight_decay),
        )

    warmup_steps = config.head_warmup_steps if config.fine_tune == "all" else 0
    phases = [phase(warmup_steps, head_vars)] if warmup_steps else []
    phases.append(phase(plan.total_steps, all_vars))

    def input_batches(batch_size: int, shuffle_buffer: int) -> tf.data.Dataset:
        return data.train_dataset(
            config.data,
            manifest,
            config.image_size,
            batch_size,
            shuffle_buffer=shuffle_buffer,
            seed=config.seed + start,
        )

    iterator = iter(
        strategy.experimental_distribute_dataset(
            input_batches(config.batch_size, config.shuffle_buffer)
        )
    )
    summaries = TrainSummaries(config.run_dir)
    summaries.images(start, data.augment_batch(next(iter(input_batches(3, 1)))[0]))

    log.info(
        "training %s: %d classes, %d examples, batch %d (%.1f steps/epoch), step %d -> %d, "
        "%s lr %g, fine-tune %s, weights %s, %s%s",
        plan.run_name,
        manifest.num_classes,
        manifest.count("train"),
        config.batch_size,
        plan.steps_per_epoch,
        start,
        plan.total_steps,
        config.optimizer,
        config.lr,
        config.fine_tune,
        config.weights,
        where,
        ", XLA" if config.xla else "",
    )
    result = _loop(plan, start, phases, iterator, schedule, checkpointer, summaries, metrics, stop)
    summaries.close()
    if not result.complete:
        return result

    export_uri = storage.join(config.run_dir, run_dir.EXPORT_DIR)
    started = time.perf_counter()
    export_model(_float32_copy(model, plan) if mixed else model,
                 manifest.labels, config.image_size, export_uri)  # fmt: skip
    log.info("exported the model to %s (%.1f s)", export_uri, time.perf_counter() - started)
    run_dir.write_complete(
        config.run_dir,
        {
            "final_step": result.final_step,
            "finished": run_dir.now(),
            "export": run_dir.EXPORT_DIR,
            "examples_per_sec": result.examples_per_sec,
        },
    )
    log.info("run complete at step %d: %s", result.final_step, config.run_dir)
    return result


@dataclasses.dataclass
class Phase:
    """Train with `step` (and report `penalty`) until the step counter reaches `until`."""

    until: int
    step: Callable[[object], tf.Tensor]
    penalty: Callable[[], float]


def _loop(
    plan: Plan,
    start: int,
    phases: list[Phase],
    iterator,  # noqa: ANN001
    schedule,  # noqa: ANN001
    checkpointer: Checkpointer,
    summaries: TrainSummaries,
    metrics: TrainMetrics,
    stop: StopRequest,
) -> Result:
    config = plan.config
    batch = config.batch_size
    current = start
    interval_start, interval_step = time.perf_counter(), current
    steady_start: tuple[float, int] | None = None  # (time, step) at the end of the 1st interval
    last = time.perf_counter()
    while current < plan.total_steps and not stop.requested:
        phase = next(p for p in phases if current < p.until)
        if current == phases[0].until and len(phases) > 1:
            log.info("head warm-up done at step %d: training the whole network", current)
        loss = phase.step(iterator)
        current += 1
        now = time.perf_counter()
        metrics.step_done(now - last, batch, current)
        last = now

        if current % config.log_every == 0 or current == plan.total_steps:
            # Waits for the step: only every log_every steps.
            loss_value = float(loss) + phase.penalty()
            now = last = time.perf_counter()
            seconds = (now - interval_start) / (current - interval_step)
            lr = float(schedule(current - 1))
            log.info(
                "step %d, loss = %.2f (%.1f examples/sec; %.3f sec/batch), lr = %.6g",
                current, loss_value, batch / seconds, seconds, lr,
            )  # fmt: skip
            summaries.scalars(
                current,
                {"loss": loss_value, "learning_rate": lr, "examples_per_sec": batch / seconds},
            )
            metrics.loss.set(loss_value)
            metrics.learning_rate.set(lr)
            metrics.examples_per_second.set(batch / seconds)
            if steady_start is None:
                steady_start = (now, current)
            interval_start, interval_step = now, current
        if checkpointer.due(current):
            checkpointer.save(current)
            summaries.flush()
            last = time.perf_counter()

    loop_end = time.perf_counter()
    checkpointer.save(current)
    summaries.flush()
    if stop.requested:
        log.info(
            "stopped at step %d of %d (%s); the same command resumes from here",
            current, plan.total_steps, stop.signal.name,
        )  # fmt: skip
    rate = None
    if steady_start is not None and current > steady_start[1]:
        rate = (current - steady_start[1]) * batch / (loop_end - steady_start[0])
    return Result(current, current >= plan.total_steps, rate)


def _float32_copy(model: keras.Model, plan: Plan) -> keras.Model:
    """The trained model in float32, for serving on any device."""
    keras.mixed_precision.set_global_policy("float32")
    copy = build_classifier(
        plan.manifest.num_classes, plan.config.image_size, dropout=plan.config.dropout
    )
    copy.set_weights(model.get_weights())
    return copy
