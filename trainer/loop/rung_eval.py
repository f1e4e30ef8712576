"""The trainer's pass over the validation split at a rung checkpoint, and its verdict.

See trainer.rungs for why the trainer judges itself. This is the TensorFlow half: the training
model, called in inference mode on the trainer's own device (a GPU, at the run's precision),
over the same batches of the same split the evaluator scores (common.validation). It costs
one validation pass per rung; each is logged with its seconds and observed as
finetune_rung_eval_seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import keras
import tensorflow as tf

from common import data, storage
from common.layout import CHECKPOINT_NAME
from common.validation import score_split
from trainer.metrics import TrainMetrics
from trainer.prepare import Plan
from trainer.rungs import Rungs, record_result, stop_record

log = logging.getLogger("trainer")


class RungJudge:
    """Scores a rung checkpoint (unless its result is on record), then applies the rule."""

    def __init__(
        self,
        plan: Plan,
        rungs: Rungs,
        model: keras.Model,
        metrics: TrainMetrics,
        check_lease: Callable[[], None],
    ) -> None:
        self.plan, self.rungs, self.metrics, self.check_lease = plan, rungs, metrics, check_lease
        self.predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        self.precision = keras.mixed_precision.global_policy().name
        self._batches: tf.data.Dataset | None = None

    def due(self, step: int) -> bool:
        return self.rungs.due(step)

    def batches(self) -> tf.data.Dataset:
        if self._batches is None:
            config = self.plan.config
            self._batches = data.eval_dataset(
                config.data, self.plan.manifest, "validation", config.image_size,
                config.batch_size,
            )  # fmt: skip
        return self._batches

    def score(self) -> tuple[dict, list[list[int]]]:
        config, manifest = self.plan.config, self.plan.manifest
        return score_split(self.predict, self.batches(), config.data, manifest)

    def __call__(self, step: int, train_loss: float | None = None) -> bool:
        """Judge the run at rung `step` (its checkpoint saved; train_loss: the loss of that
        step, None after a restart); True when it is to stop, with its stop.json written (or
        one was there already)."""
        run = self.plan.run
        self.check_lease()
        checkpoint = storage.join(run.checkpoints_dir, f"{CHECKPOINT_NAME}-{step}")
        entry, ours = record_result(
            run,
            step,
            checkpoint,
            self.score,
            self.plan.manifest.labels,
            self.precision,
            train_loss,
        )
        who = "scored here" if ours else f"the {entry.get('scored_by') or 'evaluator'}'s result"
        if "top1" not in entry:
            log.warning("rung step %d: no score on record (%s); not judged", step,
                        entry.get("error", "?"))  # fmt: skip
            return False
        if ours:
            self.metrics.rung_eval.observe(entry["seconds"])
        log.info(
            "rung step %d: top-1 %.4f, loss %.4g over %d validation images (%s%s)",
            step, entry["top1"], entry["loss"], entry["examples"], who,
            f", {entry['seconds']:.1f} s at {self.precision}" if ours else "",
        )  # fmt: skip
        verdict = self.rungs.judge(run, step, train_loss)
        if verdict is None:
            log.info("rung step %d: %s goes on (%d of the sweep's runs have reached this step)",
                     step, run.name, self.rungs.reached)  # fmt: skip
            return False
        self.check_lease()
        if run.save_stop_request(stop_record(verdict)):
            log.info("rung step %d: stopping %s (%s): %s", step, run.name, verdict.rule,
                     verdict.reason)  # fmt: skip
        return True

    def rejudge(self, step: int) -> bool:
        """At a checkpoint between rungs: judge the run again at its last rung, on the results
        on record, if not every run had reached that rung at its verdict (trainer.rungs says
        why), or with a patience, on whatever has been scored since; True when it is to stop,
        with its stop.json written."""
        rung = self.rungs.open_rung(step)
        if rung is None and not self.rungs.rule.patience:
            return False
        run = self.plan.run
        verdict = self.rungs.judge(run, rung or step)
        if verdict is None:
            log.debug("step %d: %s still goes on (%d runs at or past step %d)",
                      step, run.name, self.rungs.reached, rung or step)  # fmt: skip
            return False
        self.check_lease()
        if run.save_stop_request(stop_record(verdict)):
            if "rung" not in verdict.figures:  # patience, or an absurd loss
                log.info("step %d: stopping %s (%s): %s", step, run.name, verdict.rule,
                         verdict.reason)  # fmt: skip
            else:
                log.info("step %d: stopping %s (%s), judged again at the rung of step %d now "
                         "that %d of the sweep's runs have reached it: %s", step, run.name,
                         verdict.rule, rung, self.rungs.reached, verdict.reason)  # fmt: skip
        return True
