"""The evaluator's Prometheus metrics: one series per run (run names are bounded by the sweep)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from common import metrics as common_metrics

REGISTRY = common_metrics.new_registry()
TOP1 = Gauge(
    "finetune_eval_top1_accuracy",
    "Top-1 accuracy of the last evaluated checkpoint (0-1)",
    ["run"],
    registry=REGISTRY,
)
TOP5 = Gauge(
    "finetune_eval_top5_accuracy",
    "Top-5 accuracy of the last evaluated checkpoint (0-1)",
    ["run"],
    registry=REGISTRY,
)
LOSS = Gauge(
    "finetune_eval_loss",
    "Mean cross-entropy of the last evaluated checkpoint",
    ["run"],
    registry=REGISTRY,
)
LAST_STEP = Gauge(
    "finetune_eval_last_step",
    "Training step of the last evaluated checkpoint",
    ["run"],
    registry=REGISTRY,
)
BEST_TOP1 = Gauge(
    "finetune_eval_best_top1_accuracy",
    "Best top-1 accuracy over the run's checkpoints (0-1)",
    ["run"],
    registry=REGISTRY,
)
BEST_STEP = Gauge(
    "finetune_eval_best_step",
    "Training step of the run's best checkpoint",
    ["run"],
    registry=REGISTRY,
)
EVALUATIONS = Counter(
    "finetune_eval_checkpoints_total",
    "Checkpoints evaluated",
    ["run"],
    registry=REGISTRY,
)
FAILURES = Counter(
    "finetune_eval_failures_total",
    "Attempts that could not read a checkpoint",
    ["run"],
    registry=REGISTRY,
)
DURATION = Gauge(
    "finetune_eval_duration_seconds",
    "Wall time of the last evaluation",
    ["run"],
    registry=REGISTRY,
)


def serve(port: int) -> None:
    common_metrics.serve(port, REGISTRY)


def record(run: str, result: dict, step: int, best: dict | None) -> None:
    TOP1.labels(run).set(result["top1"])
    if result.get("top5") is not None:
        TOP5.labels(run).set(result["top5"])
    LOSS.labels(run).set(result["loss"])
    LAST_STEP.labels(run).set(step)
    DURATION.labels(run).set(result.get("seconds") or 0)
    EVALUATIONS.labels(run).inc()
    if best is not None:
        BEST_TOP1.labels(run).set(best["top1"])
        BEST_STEP.labels(run).set(best["step"])
