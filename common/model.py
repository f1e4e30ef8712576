"""The classifier: Keras' Inception-v3 backbone with a new head sized from the dataset.

Trainer and evaluator both build the model here, so a checkpoint written by one restores into
the other (`tf.train.Checkpoint(model=model)`): same layers, same names, same nesting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Keras (and TensorFlow) load on first use: command lines read the constants
    import keras

BACKBONE_NAME = "inception_v3"
HEAD_NAME = "logits"
MIN_IMAGE_SIZE = 75  # the smallest input Keras' Inception-v3 accepts
IMAGENET = "imagenet"
# The classic recipe's dropout before the logits (keep probability 0.8).
DEFAULT_DROPOUT = 0.2
RANDOM_INIT_BN_MOMENTUM = 0.9


def build_classifier(
    num_classes: int,
    image_size: int,
    weights: str | None = None,
    *,
    dropout: float = DEFAULT_DROPOUT,
    freeze_batchnorm: bool | None = None,
) -> keras.Model:
    """Inception-v3 (global average pooling) plus a dense head; outputs float32 logits.

    Input: float images already preprocessed to [-1, 1], shape (image_size, image_size, 3).
    weights: None (random), "imagenet" (Keras' download, cached) or a local weights file of the
    backbone (a `.h5` or `.weights.h5` file, like Keras' `..._notop.h5`).
    freeze_batchnorm: call the backbone with training=False, so batch norm keeps its moving
    statistics and runs in inference mode even when the backbone is trained, as the Keras
    fine-tuning guide recommends for pretrained weights. Default: only with pretrained weights;
    from random weights batch norm has no statistics worth keeping and must learn them.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    import keras

    if freeze_batchnorm is None:
        freeze_batchnorm = weights is not None
    inputs = keras.Input((image_size, image_size, 3), name="images")
    backbone = keras.applications.InceptionV3(
        include_top=False,
        weights=weights,
        input_shape=(image_size, image_size, 3),
        pooling="avg",
        name=BACKBONE_NAME,
    )
    if weights is None:
        _quicken_batchnorm(backbone)
    features = backbone(inputs, training=False) if freeze_batchnorm else backbone(inputs)
    features = keras.layers.Dropout(dropout, name="dropout")(features)
    # float32 even under a mixed-precision policy: softmax and loss need the range.
    logits = keras.layers.Dense(num_classes, dtype="float32", name=HEAD_NAME)(features)
    return keras.Model(inputs, logits, name="inception_v3_classifier")


def _quicken_batchnorm(backbone: keras.Model) -> None:
    """From random weights, let batch norm's moving statistics follow the batches within tens
    of steps rather than hundreds: with Keras' 0.99 a short run is evaluated with statistics
    that are still mostly their initial values, and scores at chance whatever it learned."""
    import keras

    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = RANDOM_INIT_BN_MOMENTUM


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE_NAME)


def head_of(model: keras.Model) -> keras.layers.Layer:
    return model.get_layer(HEAD_NAME)
