"""Checkpoints every N steps and every M minutes, keeping the newest K.

Layout (a contract with the evaluator): `run-dir/checkpoints/ckpt-<step>.index|.data-*` and
the `checkpoint` state file, written by tf.train.CheckpointManager from
`tf.train.Checkpoint(model=..., optimizer=..., step=...)`.

With several workers every one of them saves at the same steps (reading some distributed
variables is a collective), but only the chief into the run dir: the others save into a
private temporary folder and delete it, TensorFlow's documented multi-worker pattern.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable

import tensorflow as tf

from common.cli import UserError, first_line
from common.layout import CHECKPOINT_NAME
from common.storage import StorageUnavailable
from trainer.metrics import TrainMetrics

log = logging.getLogger("trainer")

# What TensorFlow's gs:// raises once its (bounded, see common.storage) retries are spent: an
# outage or a lost bucket, which a later attempt may get past.
STORAGE_FAILURES = (tf.errors.AbortedError, tf.errors.UnavailableError,
                    tf.errors.DeadlineExceededError)  # fmt: skip


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
        before_save: Callable[[], None] = lambda: None,
        chief: bool = True,
    ) -> None:
        self.directory = directory
        self.before_save = before_save  # raises when this process may no longer write here
        self.checkpoint = checkpoint
        self.chief = chief
        self.manager = tf.train.CheckpointManager(
            checkpoint, directory, max_to_keep=keep, checkpoint_name=CHECKPOINT_NAME
        )
        self.every_steps = every_steps
        self.every_seconds = every_minutes * 60.0
        self.metrics = metrics
        self.saved_step: int | None = None
        self.saved_at = time.monotonic()

    def restore_latest(self) -> int | None:
        """Restore the newest checkpoint that reads; its step, or None when there is none.

        A damaged newest checkpoint (a disk or copy error, a killed upload) falls back to the
        one before, said out loud: failing would make a restarted pod fail forever.
        """
        if self.chief:
            self._remove_killed_saves()
        paths = list(reversed(self.manager.checkpoints))
        if not paths:
            return None
        reasons = []
        for path in paths:
            try:
                # Partial: a --force'd change (say head -> all) adds optimizer slots.
                self.checkpoint.restore(path).expect_partial()
            except (ValueError, tf.errors.OpError) as exc:
                reasons.append(f"{path}: {first_line(exc)}")
                log.warning("cannot restore %s (%s); trying the one before", path, first_line(exc))
                continue
            if path != paths[0]:
                log.warning("resuming from %s, the newest checkpoint that restores", path)
            step = int(self.checkpoint.step.numpy())
            self.saved_step, self.saved_at = step, time.monotonic()
            return step
        raise UserError(
            f"no checkpoint in {self.directory} restores into this model (newest: "
            f"{reasons[0]}); use another --run-dir, or move the checkpoints away to start over."
        )

    def _remove_killed_saves(self) -> None:
        """`ckpt-N_temp/` folders are a killed save's leftovers: this run's, so ours to remove."""
        for name in (
            tf.io.gfile.listdir(self.directory) if tf.io.gfile.isdir(self.directory) else []
        ):
            if name.rstrip("/").endswith("_temp"):
                path = self.directory.rstrip("/") + "/" + name.rstrip("/")
                tf.io.gfile.rmtree(path)
                log.info("removed %s, left by a save that was stopped", path)

    def step_due(self, step: int) -> bool:
        return step % self.every_steps == 0

    def time_due(self) -> bool:
        """By this process's clock: with several workers, only as one vote (StepSync)."""
        return time.monotonic() - self.saved_at >= self.every_seconds

    def save(self, step: int) -> None:
        if step == self.saved_step:
            return
        start = time.perf_counter()
        if self.chief:
            self.before_save()
            path = self._save_here(step)
        else:
            self._save_and_discard(step)
        seconds = time.perf_counter() - start
        self.saved_step, self.saved_at = step, time.monotonic()
        self.metrics.checkpoint_save.observe(seconds)
        self.metrics.last_checkpoint_step.set(step)
        if self.chief:
            log.info("saved checkpoint %s (%.2f s)", path, seconds)
        else:
            log.info("checkpoint at step %d: the chief keeps it (%.2f s)", step, seconds)

    def _save_here(self, step: int) -> str:
        """Save into the run dir; storage that keeps failing is one sentence, exit code 1."""
        try:
            return self.manager.save(checkpoint_number=step)
        except STORAGE_FAILURES as exc:
            raise StorageUnavailable(
                f"could not save the checkpoint of step {step} to {self.directory}: "
                f"{first_line(exc, 200)}; started again, the run resumes from its last "
                "checkpoint."
            ) from exc

    def _save_and_discard(self, step: int) -> None:
        """A non-chief worker's part in a save: the same collectives, nothing kept."""
        private = tempfile.mkdtemp(prefix="inception-finetune-worker-ckpt-")
        try:
            self.checkpoint.write(f"{private}/{CHECKPOINT_NAME}-{step}")
        finally:
            shutil.rmtree(private, ignore_errors=True)
