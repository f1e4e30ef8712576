"""Checkpoints every N steps and every M minutes, keeping the newest K.

Layout (a contract with the evaluator): `run-dir/checkpoints/ckpt-<step>.index|.data-*` and
the `checkpoint` state file, written by tf.train.CheckpointManager from
`tf.train.Checkpoint(model=..., optimizer=..., step=...)`.
"""

from __future__ import annotations

import logging
import time

import tensorflow as tf

from common.cli import UserError
from trainer.metrics import TrainMetrics
from trainer.run_dir import CHECKPOINT_NAME

log = logging.getLogger("trainer")


class Checkpointer:
    def __init__(
        self,
        directory: str,
        checkpoint: tf.train.Checkpoint,
        *,
        keep: int,
        every_steps: int,
        every_minutes: float,
        metrics: TrainMetrics,
    ) -> None:
        self.checkpoint = checkpoint
        self.manager = tf.train.CheckpointManager(
            checkpoint, directory, max_to_keep=keep, checkpoint_name=CHECKPOINT_NAME
        )
        self.every_steps = every_steps
        self.every_seconds = every_minutes * 60.0
        self.metrics = metrics
        self.saved_step: int | None = None
        self.saved_at = time.monotonic()

    def restore_latest(self) -> int | None:
        """Restore the newest checkpoint; its step, or None when there is none."""
        path = self.manager.latest_checkpoint
        if path is None:
            return None
        try:
            # Partial: a --force'd change (say head -> all) adds optimizer slots to start fresh.
            self.checkpoint.restore(path).expect_partial()
        except (ValueError, tf.errors.OpError) as exc:
            reason = str(exc).strip().splitlines()[0][:300]
            raise UserError(f"cannot restore {path} into this model: {reason}") from exc
        step = int(self.checkpoint.step.numpy())
        self.saved_step, self.saved_at = step, time.monotonic()
        return step

    def due(self, step: int) -> bool:
        return step % self.every_steps == 0 or (
            time.monotonic() - self.saved_at >= self.every_seconds
        )

    def save(self, step: int) -> None:
        if step == self.saved_step:
            return
        start = time.perf_counter()
        path = self.manager.save(checkpoint_number=step)
        seconds = time.perf_counter() - start
        self.saved_step, self.saved_at = step, time.monotonic()
        self.metrics.checkpoint_save.observe(seconds)
        self.metrics.last_checkpoint_step.set(step)
        log.info("saved checkpoint %s (%.2f s)", path, seconds)
