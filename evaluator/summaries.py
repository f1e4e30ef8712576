"""TensorBoard events in run-dir/eval, beside the trainer's run-dir/train.

The scalar tags match the trainer's where they mean the same thing (`loss`), so TensorBoard
overlays the train and eval curves of a run.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class EvalSummaries:
    """One event writer per run's eval dir, owned by the evaluator's Session."""

    def __init__(self) -> None:
        self.writers: dict[str, tf.summary.SummaryWriter] = {}

    def write(self, eval_dir: str, step: int, result: dict, confusion: list[list[int]]) -> None:
        writer = self.writers.get(eval_dir)
        if writer is None:
            writer = self.writers[eval_dir] = tf.summary.create_file_writer(eval_dir)
        _write(writer, step, result, confusion)

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
    writer: tf.summary.SummaryWriter, step: int, result: dict, confusion: list[list[int]]
) -> None:
    with writer.as_default(step=step):
        tf.summary.scalar("loss", result["loss"])
        tf.summary.scalar("accuracy/top1", result["top1"])
        if result.get("top5") is not None:
            tf.summary.scalar("accuracy/top5", result["top5"])
        tf.summary.image(
            "confusion_matrix",
            confusion_image(np.asarray(confusion))[None],
            description="rows: true class, columns: predicted class, shade: share of the row",
        )
    writer.flush()


def confusion_image(confusion: np.ndarray) -> np.ndarray:
    """A heat map, uint8 RGB: each row normalised, white (0) to dark blue (all of the row)."""
    rows = confusion.sum(axis=1, keepdims=True).astype(np.float64)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    cell = int(np.clip(512 // max(1, len(confusion)), 4, 48))
    share = np.kron(share, np.ones((cell, cell)))
    white, blue = np.array([255.0, 255.0, 255.0]), np.array([8.0, 48.0, 107.0])
    pixels = white + share[..., None] * (blue - white)
    return pixels.round().astype(np.uint8)
