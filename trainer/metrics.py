"""The trainer's Prometheus metrics, labelled with the run's name."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from common.metrics import DURATION_BUCKETS, PREFIX, new_registry, serve


class TrainMetrics:
    def __init__(self, run: str) -> None:
        self.registry = new_registry()
        labels = ["run"]

        def make(kind: type, name: str, doc: str, **kwargs: object):  # noqa: ANN202
            metric = kind(PREFIX + name, doc, labels, registry=self.registry, **kwargs)
            return metric.labels(run=run)

        self.steps = make(Counter, "train_steps", "Training steps done by this process.")
        self.examples = make(
            Counter, "train_examples", "Training examples consumed by this process."
        )
        self.global_step = make(
            Gauge, "train_global_step", "The run's step counter (survives restarts)."
        )
        self.target_steps = make(Gauge, "train_target_steps", "The step the run trains to.")
        self.loss = make(Gauge, "train_loss", "Training loss at the latest logged step.")
        self.learning_rate = make(Gauge, "train_learning_rate", "Current learning rate.")
        self.examples_per_second = make(
            Gauge, "train_examples_per_second", "Throughput over the latest logging interval."
        )
        self.step_duration = make(
            Histogram,
            "train_step_duration_seconds",
            "Wall time per training step.",
            buckets=DURATION_BUCKETS,
        )
        self.checkpoint_save = make(
            Histogram,
            "checkpoint_save_seconds",
            "Wall time to save a checkpoint.",
            buckets=DURATION_BUCKETS,
        )
        self.rung_eval = make(
            Histogram,
            "rung_eval_seconds",
            "Wall time of the validation pass at a rung checkpoint (early stopping in a sweep).",
            buckets=DURATION_BUCKETS,
        )
        self.last_checkpoint_step = make(
            Gauge, "checkpoint_last_step", "Step of the latest saved checkpoint."
        )

    def serve(self, port: int) -> None:
        serve(port, self.registry)

    def step_done(self, seconds: float, examples: int, step: int) -> None:
        self.steps.inc()
        self.examples.inc(examples)
        self.global_step.set(step)
        self.step_duration.observe(seconds)
