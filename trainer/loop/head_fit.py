"""The first stage of a fine-tune: the new head fitted to the frozen backbone's features.

On a frozen backbone the head is a multinomial logistic regression on fixed features: a convex
problem with one optimum. Found by full-batch optimisation on features computed once, it takes
seconds; SGD on augmented batches takes epochs to get near it (and a learning-rate sweep would
spend its candidates on the head, not on the fine-tune). This is the Keras transfer-learning
guide's first stage (train the head to convergence, then unfreeze) done exactly: the runs of a
sweep start where a linear probe ends and differ only in how they fine-tune from there.

The regularisation is scikit-learn's default for LogisticRegression (C = 1: half the squared
weights added to the summed loss), so "at least a linear probe" is measured against the probe
most people run.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import keras
import numpy as np
import tensorflow as tf

from common import data
from common.manifest import Manifest
from common.model import backbone_of, head_of
from common.records import TRAIN

log = logging.getLogger("trainer")

# Features of this many training examples at most: on a large dataset the probe's optimum
# hardly moves past it, and the pass over them stays a small part of an epoch.
MAX_EXAMPLES = 10_000
# Full-batch Adam on a convex problem: enough iterations to reach the optimum's accuracy.
ITERATIONS = 500
STEP = 0.01
BATCH = 64


@dataclasses.dataclass
class HeadFit:
    examples: int
    loss: float  # mean cross-entropy on the fitted examples
    top1: float  # training accuracy of the fitted head
    seconds: float


def features(
    model: keras.Model, data_uri: str, manifest: Manifest, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The backbone's pooled features of up to MAX_EXAMPLES training images (evaluation
    preprocessing: the whole image, no augmentation), and their labels."""
    backbone = backbone_of(model)
    ds = data.eval_dataset(data_uri, manifest, TRAIN, image_size, BATCH)
    xs, ys, seen = [], [], 0
    for images, labels in ds:
        xs.append(tf.cast(backbone(images, training=False), tf.float32).numpy())
        ys.append(labels.numpy())
        seen += len(labels)
        if seen >= MAX_EXAMPLES:
            break
    return np.concatenate(xs)[:MAX_EXAMPLES], np.concatenate(ys)[:MAX_EXAMPLES]


def solve(x: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of the L2-regularised multinomial logistic regression of y on x."""
    x = tf.constant(x, tf.float32)
    labels = tf.constant(y, tf.int32)
    n, f = x.shape
    kernel = tf.Variable(tf.zeros([f, num_classes]))
    bias = tf.Variable(tf.zeros([num_classes]))
    optimizer = keras.optimizers.Adam(STEP)
    penalty = 0.5 / n  # C = 1 on the summed loss, divided by n for the mean

    @tf.function
    def iterate() -> None:
        for _ in tf.range(ITERATIONS):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels, x @ kernel + bias)
                ) + penalty * tf.reduce_sum(kernel**2)
            grads = tape.gradient(loss, [kernel, bias])
            optimizer.apply_gradients(zip(grads, [kernel, bias], strict=True))

    iterate()
    return kernel.numpy(), bias.numpy()


def fit_head(model: keras.Model, data_uri: str, manifest: Manifest, image_size: int) -> HeadFit:
    """Set the model's head to the probe's optimum on the frozen backbone; report it."""
    started = time.perf_counter()
    x, y = features(model, data_uri, manifest, image_size)
    kernel, bias = solve(x, y, manifest.num_classes)
    head = head_of(model)
    head.kernel.assign(kernel)
    head.bias.assign(bias)
    logits = x @ kernel + bias
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(y)), y].mean())
    top1 = float((logits.argmax(axis=1) == y).mean())
    return HeadFit(len(y), loss, top1, time.perf_counter() - started)
