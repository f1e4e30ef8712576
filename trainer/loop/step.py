"""One training step: colour augmentation, label-smoothed cross-entropy, the classic L2 weight
penalty.

The step pulls its batch (uint8 crops) from the (distributed) iterator inside the compiled
function, so the host never touches the images, and distorts their colours on the device,
batched; with --xla the per-replica computation is compiled by XLA.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from common.data import augment_batch


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
    """A tf.function(iterator) -> cross-entropy that trains `variables` and advances `step`.

    The weight penalty, weight_decay * sum(||w||^2) / 2 over the kernels, enters the gradients
    directly (as weight_decay * w): the same update as putting it in the loss, without the
    passes over every weight that differentiating it would cost. `make_penalty` gives its value.
    """
    decayed = {id(v) for v in kernels(model, variables)} if weight_decay else set()
    scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    # Gradients are summed over replicas, so each adds its share of the penalty's.
    decay = weight_decay / strategy.num_replicas_in_sync

    def loss_and_grads(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, list]:
        images = augment_batch(images)
        targets = tf.one_hot(labels, num_classes)
        if label_smoothing:
            targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            per_example = tf.nn.softmax_cross_entropy_with_logits(targets, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            scaled = optimizer.scale_loss(loss) if scales_loss else loss
        grads = tape.gradient(scaled, variables)
        if decayed:
            # Scaled like the loss's gradients; the optimizer unscales both together.
            factor = decay * optimizer.dynamic_scale if scales_loss else decay
            grads = [
                g + factor * v if id(v) in decayed else g
                for g, v in zip(grads, variables, strict=True)
            ]
        return loss, grads

    if jit_compile:
        # XLA compiles the computation; the update stays outside, where the optimizer may
        # talk to the other replicas (a cross-replica merge cannot be compiled).
        loss_and_grads = tf.function(loss_and_grads, jit_compile=True)

    def replica_step(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        loss, grads = loss_and_grads(images, labels)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    @tf.function
    def train_step(iterator: object) -> tf.Tensor:
        images, labels = next(iterator)
        loss = strategy.run(replica_step, args=(images, labels))
        step.assign_add(1)
        return strategy.reduce("SUM", loss, axis=None)

    return train_step


def make_penalty(model: keras.Model, variables: list, weight_decay: float) -> Callable[[], float]:
    """The current weight penalty, weight_decay * sum(||w||^2) / 2 over the trained kernels."""
    decayed = kernels(model, variables)
    if not weight_decay or not decayed:
        return lambda: 0.0

    @tf.function
    def penalty() -> tf.Tensor:
        return weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in decayed])

    return lambda: float(penalty())
