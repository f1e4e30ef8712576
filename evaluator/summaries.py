"""TensorBoard events in run-dir/eval, beside the trainer's run-dir/train.

The scalar tags match the trainer's where they mean the same thing (`loss`), so TensorBoard
overlays the train and eval curves of a run.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from evaluator.confusion import GRID_MAX, confusion_image


class EvalSummaries:
    """One event writer per run's eval dir, owned by the evaluator's Session."""

    def __init__(self) -> None:
        self.writers: dict[str, tf.summary.SummaryWriter] = {}

    def write(
        self,
        eval_dir: str,
        step: int,
        result: dict,
        confusion: list[list[int]] | None,
        labels: list[str],
    ) -> None:
        """A result's scalars, and its confusion matrix as an image (when there is one)."""
        writer = self.writers.get(eval_dir)
        if writer is None:
            writer = self.writers[eval_dir] = tf.summary.create_file_writer(eval_dir)
        _write(writer, step, result, confusion, labels)

    def stopped(self, eval_dir: str, step: int, reason: str) -> None:
        """A stopped run: `early_stop/stopped` 1 at its step, and the reason as text."""
        writer = self.writers.get(eval_dir)
        if writer is None:
            writer = self.writers[eval_dir] = tf.summary.create_file_writer(eval_dir)
        with writer.as_default(step=step):
            tf.summary.scalar("early_stop/stopped", 1.0)
            tf.summary.text("early_stop/reason", reason)
        writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


def _write(
    writer: tf.summary.SummaryWriter,
    step: int,
    result: dict,
    confusion: list[list[int]] | None,
    labels: list[str],
) -> None:
    with writer.as_default(step=step):
        tf.summary.scalar("loss", result["loss"])
        tf.summary.scalar("accuracy/top1", result["top1"])
        if result.get("top5") is not None:
            tf.summary.scalar("accuracy/top5", result["top5"])
        if confusion is None:
            return writer.flush()
        tf.summary.image(
            "confusion_matrix",
            confusion_image(np.asarray(confusion), labels)[None],
            description="rows: true class, columns: predicted class, shade: share of the row "
            f"(more than {GRID_MAX} classes: the most-confused pairs)",
        )
    writer.flush()
