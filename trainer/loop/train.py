"""The training loop: build, resume, train, checkpoint, report, export, mark complete."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import keras
import tensorflow as tf

from common import data, layout, storage
from common.cli import UserError, first_line
from common.export import export_model
from common.lease import Lease
from common.model import backbone_of, build_classifier, head_of
from trainer.checkpointing import Checkpointer
from trainer.config import TrainConfig
from trainer.loop.head_fit import fit_head
from trainer.loop.multiworker import (
    PEER_ERRORS,
    StepSync,
    check_batch_split,
    distributed_batches,
    make_strategy,
    worker_lost,
)
from trainer.loop.optimization import make_optimizer, make_schedule
from trainer.loop.rung_eval import RungJudge
from trainer.loop.step import make_penalty, make_train_step
from trainer.metrics import TrainMetrics
from trainer.prepare import Plan
from trainer.signals import StopRequest
from trainer.stopping import StopFile, diverged, from_request, save_complete
from trainer.summaries import TrainSummaries, write_hparams
from trainer.workers import ALONE, Cluster

log = logging.getLogger("trainer")


@dataclasses.dataclass
class Result:
    final_step: int
    complete: bool
    # Throughput after the first logging interval (which pays for tracing and warm-up).
    examples_per_sec: float | None
    # Why the run stopped early (the evaluator's stop.json, a NaN loss); None otherwise.
    stopped: dict | None = None


def _devices(
    precision: str, strategy: tf.distribute.Strategy | None, cluster: Cluster
) -> tuple[tf.distribute.Strategy, bool, str]:
    """Every visible GPU through MirroredStrategy (unless given one), or every GPU of every
    worker through MultiWorkerMirroredStrategy; mixed precision on GPUs unless told otherwise."""
    if strategy is None and cluster.several:
        strategy = make_strategy(cluster)  # before anything else starts TensorFlow's runtime
    gpus = tf.config.list_physical_devices("GPU")
    mixed = precision == "mixed" or (precision == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    if strategy is None:
        strategy = tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    where = f"{len(gpus)} GPU(s)" if gpus else "CPU"
    where += f", {replicas} replicas" if replicas > 1 else ""
    where += f" ({cluster.describe()})" if cluster.several else ""
    return strategy, mixed, f"{'mixed float16' if mixed else 'float32'} on {where}"


@dataclasses.dataclass
class Phase:
    """Train with `step` (and report `penalty`) until the step counter reaches `until`."""

    until: int
    step: Callable[[object], tf.Tensor]
    penalty: Callable[[], float]


@dataclasses.dataclass
class _Trainee:
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    step: tf.Variable  # the run's step counter, checkpointed
    schedule: Callable[[tf.Tensor], tf.Tensor]  # step -> learning rate
    head_vars: list
    all_vars: list  # everything --fine-tune trains (the head alone with "head")


def run(
    plan: Plan,
    metrics: TrainMetrics,
    stop: StopRequest,
    strategy: tf.distribute.Strategy | None = None,
    lease: Lease | None = None,
    cluster: Cluster = ALONE,
) -> Result:
    """Train the plan to its last step (or to a stop request); export and mark it complete.

    A stop.json from the evaluator, or a loss that is NaN or infinite, ends the run early: it is
    marked complete with the reason, without an export.

    strategy: by default MirroredStrategy over every visible GPU, or the CPU's default one.
    lease: the run dir's writer lease, checked before every checkpoint and the export.
    cluster: this process's place among the run's workers; only the chief writes.
    """
    check_lease = lease.check if lease is not None else (lambda: None)
    config = plan.config
    strategy, mixed, where = _devices(config.precision, strategy, cluster)
    if cluster.several:
        # TensorFlow's coordination service installs its own SIGTERM handler (a preemption
        # notice nobody here reads): ours again, so that the stop is seen at the next step.
        stop.install()
        check_batch_split(strategy, config.batch_size, cluster.count)
    keras.utils.set_random_seed(config.seed + (plan.resume_step or 0))
    with strategy.scope():
        trainee = _build(plan, mixed)

    checkpointer = Checkpointer(
        plan.run.checkpoints_dir,
        tf.train.Checkpoint(model=trainee.model, optimizer=trainee.optimizer, step=trainee.step),
        keep=config.keep_checkpoints,
        every_steps=config.checkpoint_every,
        every_minutes=config.checkpoint_minutes,
        metrics=metrics,
        before_save=check_lease,
        chief=cluster.chief,
    )
    start = checkpointer.restore_latest() or 0
    if start:
        log.info("resumed from checkpoint at step %d of %d", start, plan.total_steps)
    elif head_init(config) == "fit":
        _fit_head(plan, trainee.model, cluster.chief)
    if cluster.chief:
        plan.run.save_hparams(plan.hparams)
        if plan.hparams_changed:
            write_hparams(config.run_dir, plan.run_name, plan.hparams)
    metrics.global_step.set(start)
    metrics.target_steps.set(plan.total_steps)

    def input_batches(
        batch_size: int, shuffle_buffer: int, shard: tuple[int, int] = (1, 0)
    ) -> tf.data.Dataset:
        return data.train_dataset(
            config.data,
            plan.manifest,
            config.image_size,
            batch_size,
            shuffle_buffer=shuffle_buffer,
            seed=config.seed + start,
            shard=shard,
        )

    if cluster.several:
        batches = distributed_batches(
            strategy,
            config.batch_size,
            lambda batch, shard: input_batches(batch, config.shuffle_buffer, shard),
        )
    else:
        batches = strategy.experimental_distribute_dataset(
            input_batches(config.batch_size, config.shuffle_buffer)
        )
    iterator = iter(batches)
    summaries = TrainSummaries(config.run_dir, write=cluster.chief)
    if cluster.chief:
        summaries.images(start, data.augment_batch(next(iter(input_batches(3, 1)))[0]))
    (log.info if cluster.chief else log.debug)(
        "training %s: %d classes, %d examples, batch %d (%.1f steps/epoch), step %d -> %d, "
        "%s lr %g, fine-tune %s, weights %s, %s%s",
        plan.run_name, plan.manifest.num_classes, plan.manifest.count("train"),
        config.batch_size, plan.steps_per_epoch, start, plan.total_steps, config.optimizer,
        config.lr, config.fine_tune, config.weights, where, ", XLA" if config.xla else "",
    )  # fmt: skip
    if not cluster.chief:
        log.info("training %s as %s: the chief logs and writes", plan.run_name, cluster.describe())
    phases = _phases(plan, trainee, strategy)
    stop_file = StopFile(plan.run).start()
    sync = StepSync(strategy, cluster.several)
    judge = None
    if plan.rungs is not None:
        (log.info if cluster.chief else log.debug)("early stopping %s", plan.rungs.describe())
        if cluster.chief:  # the others only save with it at the rungs
            judge = RungJudge(plan, plan.rungs, trainee.model, metrics, check_lease)
    try:
        result = _loop(plan, start, phases, iterator, trainee.schedule, checkpointer, summaries,
                       metrics, stop, stop_file, sync, cluster.chief, judge)  # fmt: skip
    except tf.errors.DataLossError as exc:
        # A damaged shard fails the same way on every restart: a user error, named.
        raise data.damaged_shard_error(config.data, plan.manifest, "train", exc) from exc
    except PEER_ERRORS as exc:
        if not cluster.several:
            raise
        raise worker_lost(exc) from exc
    except tf.errors.ResourceExhaustedError as exc:
        raise resource_exhausted(exc, config) from exc
    finally:
        stop_file.close()
    summaries.close()
    if not cluster.chief:
        if result.complete or result.stopped is not None:
            log.info("run ended at step %d: the chief marks it", result.final_step)
    elif result.stopped is not None:
        check_lease()
        save_complete(plan.run, result.final_step, result.stopped, result.examples_per_sec)
    elif result.complete:
        check_lease()
        _finish(plan, trainee.model if not mixed else _float32_copy(trainee.model, plan), result)
    sync.barrier()
    return result


def head_init(config: TrainConfig) -> str:
    """--head-init with auto resolved: fit the head to pretrained features, not random ones."""
    if config.head_init != "auto":
        return config.head_init
    return "random" if config.weights == "none" else "fit"


def _fit_head(plan: Plan, model: keras.Model, chief: bool) -> None:
    """Stage one of a fresh run: the head at the linear probe's optimum (trainer.loop.head_fit).
    Every worker of a run fits the same examples the same way, so their heads agree."""
    config = plan.config
    try:
        fit = fit_head(model, config.data, plan.manifest, config.image_size)
    except tf.errors.DataLossError as exc:
        raise data.damaged_shard_error(config.data, plan.manifest, "train", exc) from exc
    (log.info if chief else log.debug)(
        "head fitted to the frozen backbone's features of %d training images in %.1f s: "
        "train top-1 %.3f, loss %.3f",
        fit.examples, fit.seconds, fit.top1, fit.loss,
    )  # fmt: skip


def resource_exhausted(exc: tf.errors.ResourceExhaustedError, config: TrainConfig) -> Exception:
    """What to tell a person about a ResourceExhaustedError: TensorFlow raises it for a full
    disk (ENOSPC while saving a checkpoint or a summary) as well as for memory, and only its
    message tells them apart; advice to shrink the batch would be wrong for a disk."""
    full = storage.disk_full_error(exc, config.run_dir)
    if full is not None:
        return full
    return UserError(
        f"out of memory with --batch-size {config.batch_size} at --image-size "
        f"{config.image_size} ({first_line(exc)}); try a smaller batch. Training resumes "
        "from the last checkpoint."
    )


def _build(plan: Plan, mixed: bool) -> _Trainee:
    """Model, step counter, schedule and optimizer (call inside the strategy's scope)."""
    config = plan.config
    model = build_classifier(
        plan.manifest.num_classes,
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
    all_vars = model.trainable_variables
    # Built for every variable up front, so a checkpoint restores its slots right away and a
    # head warm-up phase can update a subset.
    optimizer.build(all_vars)
    return _Trainee(model, optimizer, step, schedule, head_of(model).trainable_variables, all_vars)


def _phases(plan: Plan, trainee: _Trainee, strategy: tf.distribute.Strategy) -> list[Phase]:
    """An optional head warm-up, then training of everything --fine-tune names."""
    config = plan.config

    def phase(until: int, variables: list) -> Phase:
        train_step = make_train_step(
            model=trainee.model,
            optimizer=trainee.optimizer,
            strategy=strategy,
            variables=variables,
            step=trainee.step,
            num_classes=plan.manifest.num_classes,
            global_batch=config.batch_size,
            label_smoothing=config.label_smoothing,
            weight_decay=config.weight_decay,
            jit_compile=config.xla,
        )
        return Phase(until, train_step, make_penalty(trainee.model, variables, config.weight_decay))

    warmup = config.head_warmup_steps if config.fine_tune == "all" else 0
    phases = [phase(warmup, trainee.head_vars)] if warmup else []
    return [*phases, phase(plan.total_steps, trainee.all_vars)]


def _finish(plan: Plan, model: keras.Model, result: Result) -> None:
    """The export, then complete.json: written last, it marks the run finished."""
    config = plan.config
    export_uri = plan.run.export_dir
    started = time.perf_counter()
    export_model(model, plan.manifest.labels, config.image_size, export_uri)
    log.info("exported the model to %s (%.1f s)", export_uri, time.perf_counter() - started)
    plan.run.save_complete(
        {
            "final_step": result.final_step,
            "finished": layout.now(),
            "export": layout.EXPORT,
            "examples_per_sec": result.examples_per_sec,
        },
    )
    log.info("run complete at step %d: %s", result.final_step, config.run_dir)


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
    stop_file: StopFile,
    sync: StepSync,
    chief: bool = True,
    judge: RungJudge | None = None,
) -> Result:
    config = plan.config
    batch = config.batch_size
    current = start
    interval_start, interval_step = time.perf_counter(), current
    steady_start: tuple[float, int] | None = None  # (time, step) at the end of the 1st interval
    last = time.perf_counter()
    stopped: dict | None = None  # set by a stop.json or a NaN loss: the loop ends
    # A stop asked of this process (or, with several workers, of any of them): with several,
    # only the agreed answer of StepSync may end the loop, at the same step on every worker.
    halt = stop.requested and not sync.several
    say = log.info if chief else log.debug
    rung = plan.rungs.due if plan.rungs is not None else (lambda step: False)
    if judge is not None and current and not halt:
        # Resumed at a rung (killed between its checkpoint and its verdict): judge it now; or
        # past one: judge it again, against the runs that reached it since.
        if rung(current):
            judge(current)
        else:
            judge.rejudge(current)
        if stop_file.check_now() is not None and not sync.several:
            stopped = from_request(stop_file.request)
    while current < plan.total_steps and not halt and stopped is None:
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
            if (stopped := diverged(loss_value, current)) is not None:
                break  # never checkpoint a model that is no longer numbers
            seconds = (now - interval_start) / (current - interval_step)
            lr = float(schedule(current - 1))
            say(
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
        halt, time_due = sync(stop.requested or stop_file.request is not None,
                              checkpointer.time_due())  # fmt: skip
        if checkpointer.step_due(current) or time_due or rung(current):
            if (stopped := diverged(float(loss), current)) is not None:
                break
            checkpointer.save(current)
            summaries.flush()
            if judge is not None and rung(current):
                judge(current, float(loss) + phase.penalty())  # a verdict is a stop.json
            elif judge is not None:
                judge.rejudge(current)
            last = time.perf_counter()
            stop_file.check_now()  # at every checkpoint, whatever the thread's timing
            halt = halt or (stop_file.request is not None and not sync.several)
        if halt and stop_file.check_now() is not None and current < plan.total_steps:
            stopped = from_request(stop_file.request)  # stop.json (seen here or by a peer)

    loop_end = time.perf_counter()
    if stopped is not None and stopped.get("rule") == "nan":
        log.error("%s; stopping this run (the last checkpoint kept is the last good one)",
                  stopped["reason"])  # fmt: skip
        current = checkpointer.saved_step or 0
    else:
        checkpointer.save(current)
    summaries.flush()
    if stopped is not None and stopped.get("by") in ("evaluator", "trainer"):
        who = "the evaluator" if stopped["by"] == "evaluator" else "this run's rung verdict"
        log.info("stopped by %s at step %d: %s", who, current, stopped.get("reason"))
    elif stopped is None and stop.requested:
        log.info(
            "stopped at step %d of %d (%s); the same command resumes from here",
            current, plan.total_steps, stop.signal.name,
        )  # fmt: skip
    elif stopped is None and halt and current < plan.total_steps:
        log.info("stopped at step %d of %d: another worker of this run was told to stop",
                 current, plan.total_steps)  # fmt: skip
    rate = None
    if steady_start is not None and current > steady_start[1]:
        rate = (current - steady_start[1]) * batch / (loop_end - steady_start[0])
    return Result(current, current >= plan.total_steps and stopped is None, rate, stopped)


def _float32_copy(model: keras.Model, plan: Plan) -> keras.Model:
    """The trained model in float32, for serving on any device."""
    keras.mixed_precision.set_global_policy("float32")
    copy = build_classifier(
        plan.manifest.num_classes, plan.config.image_size, dropout=plan.config.dropout
    )
    copy.set_weights(model.get_weights())
    return copy
