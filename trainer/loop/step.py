"""One training step: label-smoothed cross-entropy plus the classic L2 weight penalty.

The step pulls its batch from the (distributed) iterator inside the compiled function, so
the host never touches the images; with --xla the per-replica computation is compiled by XLA.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf


def kernels(model: keras.Model, variables: list) -> list:
    """The conv and dense kernels among variables: what the weight decay applies to."""
    wanted = {id(v) for v in variables}
    return [
        layer.kernel
        for layer in _all_layers(model)
        if getattr(layer, "kernel", None) is not None and id(layer.kernel) in wanted
    ]


def _all_layers(layer: keras.layers.Layer) -> list:
    found = []
    for sub in getattr(layer, "layers", []):
        found += [sub, *_all_layers(sub)]
    return found


def make_train_step(
    *,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    strategy: tf.distribute.Strategy,
    variables: list,
    step: tf.Variable,
    num_classes: int,
    global_batch: int,
    label_smoothing: float,
    weight_decay: float,
    jit_compile: bool,
) -> Callable[[object], tf.Tensor]:
    """A tf.function(iterator) -> total loss that trains `variables` and advances `step`."""
    decayed = kernels(model, variables)
    scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    replicas = strategy.num_replicas_in_sync

    def replica_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        targets = tf.one_hot(labels, num_classes)
        if label_smoothing:
            targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            per_example = tf.nn.softmax_cross_entropy_with_logits(targets, logits)
            cross_entropy = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            penalty = tf.constant(0.0)
            if weight_decay and decayed:
                # Gradients are summed over replicas, so each adds its share of the penalty.
                penalty = weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in decayed]) / replicas
            loss = cross_entropy + penalty
            scaled = optimizer.scale_loss(loss) if scales_loss else loss
        grads = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return cross_entropy, penalty

    if jit_compile:
        replica_step = tf.function(replica_step, jit_compile=True)

    @tf.function
    def train_step(iterator: object) -> tf.Tensor:
        images, labels = next(iterator)
        cross_entropy, penalty = strategy.run(replica_step, args=(images, labels))
        step.assign_add(1)
        total = strategy.reduce("SUM", cross_entropy, axis=None)
        return total + strategy.reduce("SUM", penalty, axis=None)

    return train_step
