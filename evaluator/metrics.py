"""The evaluator's Prometheus metrics: one series per run (run names are bounded by the sweep)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from common.metrics import PREFIX, new_registry, serve


class EvalMetrics:
    """Shaped like the trainer's TrainMetrics; owned by the evaluator's Session."""

    def __init__(self) -> None:
        self.registry = new_registry()
        self.newest: dict[str, int] = {}  # run -> newest step scored, for the latest-step gauges

        def make(kind: type, name: str, doc: str):  # noqa: ANN202
            return kind(PREFIX + name, doc, ["run"], registry=self.registry)

        self.top1 = make(
            Gauge, "eval_top1_accuracy", "Top-1 accuracy of the last evaluated checkpoint (0-1)"
        )
        self.top5 = make(
            Gauge, "eval_top5_accuracy", "Top-5 accuracy of the last evaluated checkpoint (0-1)"
        )
        self.loss = make(Gauge, "eval_loss", "Mean cross-entropy of the last evaluated checkpoint")
        self.last_step = make(
            Gauge, "eval_last_step", "Training step of the last evaluated checkpoint"
        )
        self.best_top1 = make(
            Gauge, "eval_best_top1_accuracy", "Best top-1 accuracy over the run's checkpoints (0-1)"
        )
        self.best_step = make(Gauge, "eval_best_step", "Training step of the run's best checkpoint")
        self.evaluations = make(Counter, "eval_checkpoints", "Checkpoints evaluated")
        self.failures = make(Counter, "eval_failures", "Attempts that could not read a checkpoint")
        self.duration = make(Gauge, "eval_duration_seconds", "Wall time of the last evaluation")
        self.waiting = make(
            Gauge, "eval_checkpoints_waiting", "Checkpoints written but not evaluated yet"
        )
        self.oldest_waiting = make(
            Gauge,
            "eval_oldest_waiting_seconds",
            "Age of the oldest checkpoint waiting to be evaluated (0: none waits)",
        )
        self.stopped_runs = Gauge(
            PREFIX + "eval_stopped_runs",
            "Runs of the sweep stopped early (by the early-stopping rule or a NaN loss)",
            registry=self.registry,
        )

    def serve(self, port: int) -> None:
        serve(port, self.registry)

    def record(self, run: str, result: dict, step: int, best: dict | None) -> None:
        """Count an evaluation; the per-checkpoint gauges follow the run's newest step only.

        Catching up scores older checkpoints after newer ones: their figures must not replace
        the latest checkpoint's on a dashboard.
        """
        self.evaluations.labels(run).inc()
        self.duration.labels(run).set(result.get("seconds") or 0)
        if best is not None:
            self.best_top1.labels(run).set(best["top1"])
            self.best_step.labels(run).set(best["step"])
        if step < self.newest.get(run, -1):
            return
        self.newest[run] = step
        self.top1.labels(run).set(result["top1"])
        if result.get("top5") is not None:
            self.top5.labels(run).set(result["top5"])
        self.loss.labels(run).set(result["loss"])
        self.last_step.labels(run).set(step)
