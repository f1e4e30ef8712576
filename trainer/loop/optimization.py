"""Optimizer and learning-rate schedule, both driven by the run's own step counter.

The schedule reads the checkpointed step variable rather than the optimizer's iteration count,
so a resumed run continues at the same point of its schedule, whatever happened in between
(a warm-up phase, steps skipped by loss scaling).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from trainer.config import TrainConfig


def make_schedule(
    config: TrainConfig, steps_per_epoch: float, total_steps: int
) -> Callable[[tf.Tensor], tf.Tensor]:
    """step -> learning rate."""
    if config.lr_schedule == "exponential":
        # The classic recipe: multiply by 0.16 every 30 epochs, in stairs.
        return keras.optimizers.schedules.ExponentialDecay(
            config.lr,
            decay_steps=max(1.0, config.lr_decay_epochs * steps_per_epoch),
            decay_rate=config.lr_decay_factor,
            staircase=True,
        )
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total_steps - 1)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=total_steps)
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=max(1, total_steps - warmup),
        warmup_target=config.lr,
        warmup_steps=warmup,
    )


def make_optimizer(
    config: TrainConfig, learning_rate: Callable[[], tf.Tensor], mixed_precision: bool
) -> keras.optimizers.Optimizer:
    if config.optimizer == "rmsprop":
        optimizer = keras.optimizers.RMSprop(
            learning_rate,
            rho=config.rmsprop_rho,
            momentum=config.momentum,
            epsilon=config.rmsprop_epsilon,
        )
    elif config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=config.momentum)
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    if mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
