"""tf.data input for training and evaluation, read straight from the dataset's TFRecord shards.

Training follows the classic Inception recipe (a random distorted-bounding-box crop, a flip and
colour distortion), split for speed between the CPU and the accelerator:

* `train_dataset`, on the CPU, per image in parallel: decode only the crop window of the JPEG
  (`decode_and_crop_jpeg`), flip the decoded crop, resize it; batches of uint8, a quarter of
  the bytes of float32 to copy and to send to the device.
* `augment_batch`, in the training step on the device: the colour distortion, vectorised over
  the batch (one 3x3 colour matrix and one offset per image), and the scaling to [-1, 1].
  On a CPU-only machine it runs there too, still as one pass per batch.

Evaluation (`eval_dataset`, `preprocess_for_eval`) resizes the whole image (EVAL_CENTRAL_FRACTION)
and yields float32 in [-1, 1], the model's input range, ready for the model. Labels come out
0-based: the manifest's `label_offset` (1 for datasets made by the classic tool) is subtracted.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from common import records
from common.cli import UserError, first_line
from common.manifest import Manifest

AUTOTUNE = tf.data.AUTOTUNE
# The share of the image evaluation keeps, centred. The classic recipe's 0.875 suits ImageNet's
# photos; on users' folders the object often fills the frame, or sits on a plain background
# out to its edges, and the crop cuts it: on held-out object photos (benchmarks/photos.py, 299
# px) a linear probe on whole images scored 0.88 against 0.82 on central crops. 1.0: the whole.
EVAL_CENTRAL_FRACTION = 1.0

# The classic recipe's crop: cover at least 10% of the image, 5-100% of its area, aspect 3:4-4:3.
_CROP_MIN_OBJECT_COVERED = 0.1
_CROP_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
_CROP_AREA_RANGE = (0.05, 1.0)
_CROP_MAX_ATTEMPTS = 100

# The classic colour distortion's ranges.
_MAX_BRIGHTNESS_DELTA = 32.0 / 255.0
_SATURATION_RANGE = (0.5, 1.5)
_MAX_HUE_DELTA = 0.2  # fraction of a full turn of the colour wheel
_CONTRAST_RANGE = (0.5, 1.5)

# RGB <-> YIQ: a hue change is a rotation of the (I, Q) plane and a saturation change its
# scaling, so both together are one 3x3 matrix: KEEP_Y + s cos(a) KEEP_IQ + s sin(a) TURN_IQ.
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)
_KEEP_Y = _YIQ_TO_RGB[:, :1] @ _RGB_TO_YIQ[:1, :]
_KEEP_IQ = _YIQ_TO_RGB[:, 1:] @ _RGB_TO_YIQ[1:, :]
_TURN_IQ = _YIQ_TO_RGB[:, 1:] @ np.array([[0, -1], [1, 0]], np.float32) @ _RGB_TO_YIQ[1:, :]

_FEATURES = {
    records.KEY_ENCODED: tf.io.FixedLenFeature([], tf.string),
    records.KEY_LABEL: tf.io.FixedLenFeature([], tf.int64),
}

# Records held in the shuffle buffer (about 110 KB each for ImageNet-sized JPEGs).
DEFAULT_SHUFFLE_BUFFER = 2048


def _parse(serialized: tf.Tensor, label_offset: int) -> tuple[tf.Tensor, tf.Tensor]:
    example = tf.io.parse_single_example(serialized, _FEATURES)
    label = tf.cast(example[records.KEY_LABEL] - label_offset, tf.int32)
    return example[records.KEY_ENCODED], label


def _to_unit_range(images: tf.Tensor) -> tf.Tensor:
    """[0, 1] -> [-1, 1], Inception's input range."""
    return (images - 0.5) * 2.0


# ---------------------------------------------------------------- training


def random_crop(jpeg: tf.Tensor, image_size: int) -> tf.Tensor:
    """One JPEG -> a random distorted-bounding-box crop, flipped at random, resized: uint8.

    Only the crop window is decoded, and the flip is done on the decoded crop before resizing.
    """
    shape = tf.io.extract_jpeg_shape(jpeg)
    whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4])
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape,
        bounding_boxes=whole_image,
        min_object_covered=_CROP_MIN_OBJECT_COVERED,
        aspect_ratio_range=_CROP_ASPECT_RATIO_RANGE,
        area_range=_CROP_AREA_RANGE,
        max_attempts=_CROP_MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3)
    image = tf.cond(tf.random.uniform([]) < 0.5, lambda: tf.reverse(image, axis=[1]), lambda: image)
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    return tf.saturate_cast(image + 0.5, tf.uint8)  # rounded


def augment_batch(images: tf.Tensor) -> tf.Tensor:
    """uint8 [B, H, W, 3] -> float32 in [-1, 1], each image with its own random colour jitter.

    The classic random brightness, saturation, hue and contrast, folded into one 3x3 matrix and
    one offset per image (with the scaling to [-1, 1]): a batched matrix product, an add and a
    clip, instead of a pass per step and two colour-space conversions per image for the hue.
    """
    images = tf.cast(images, tf.float32)
    batch = tf.shape(images)[0]
    saturation = tf.random.uniform([batch, 1, 1], *_SATURATION_RANGE)
    angle = tf.random.uniform([batch, 1, 1], -_MAX_HUE_DELTA, _MAX_HUE_DELTA) * (2.0 * math.pi)
    colour = (
        _KEEP_Y + (saturation * tf.cos(angle)) * _KEEP_IQ + (saturation * tf.sin(angle)) * _TURN_IQ
    )  # [B, 3, 3]
    brightness = tf.random.uniform([batch, 1], -_MAX_BRIGHTNESS_DELTA, _MAX_BRIGHTNESS_DELTA)
    contrast = tf.random.uniform([batch, 1], *_CONTRAST_RANGE)
    # In [0, 1] units: y = contrast * (C x + b) + (1 - contrast) * mean(C x + b), clipped;
    # the mean of a linear map is the map of the channel means, here those of every 4th pixel
    # of every 4th row (a 16th of the reads, as good for a random contrast change).
    channel_means = tf.reduce_mean(images[:, ::4, ::4], axis=[1, 2]) / 255.0  # [B, 3]
    offset = brightness + (1.0 - contrast) * tf.einsum("bij,bj->bi", colour, channel_means)
    # Then [0, 1] -> [-1, 1]: twice the matrix and the offset, less 1.
    matrix = colour * (contrast[:, :, None] * (2.0 / 255.0))
    images = tf.einsum("bhwj,bij->bhwi", images, matrix) + (2.0 * offset - 1.0)[:, None, None, :]
    return tf.clip_by_value(images, -1.0, 1.0)


def train_dataset(
    data_uri: str,
    manifest: Manifest,
    image_size: int,
    batch_size: int,
    *,
    split: str = records.TRAIN,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    seed: int | None = None,
    shard: tuple[int, int] = (1, 0),
) -> tf.data.Dataset:
    """Endless, shuffled batches of random crops: (uint8 [B, S, S, 3], int32 [B]).

    Feed the images through `augment_batch` (in the training step) before the model. The data
    repeats before batching, so a batch larger than the dataset still fills up.
    shard (n, i): keep the records i, i + n, i + 2n, ... of every shard file, the share of
    worker i of n; each example is then read by one worker per epoch whatever the file order.
    """
    files = manifest.shard_uris(data_uri, split)
    if not files:
        raise ValueError(f"the dataset has no {split} shards")
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    count, index = shard

    def records_of(path: tf.Tensor) -> tf.data.Dataset:
        records = tf.data.TFRecordDataset(path)
        return records.shard(count, index) if count > 1 else records

    ds = ds.interleave(
        records_of,
        cycle_length=min(len(files), 16),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=False,
    )
    ds = ds.shuffle(max(1, min(shuffle_buffer, manifest.count(split) // count)), seed=seed)
    offset = manifest.label_offset

    def load(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        jpeg, label = _parse(serialized, offset)
        return random_crop(jpeg, image_size), label

    ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = False
    options.experimental_optimization.map_parallelization = True
    # Parallelism comes from decoding many images at once; an op splitting one image across
    # threads would only compete with the training step for the same cores.
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options).prefetch(AUTOTUNE)


# ---------------------------------------------------------------- evaluation


def _central_window(height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """[y, x, h, w] of the central crop (same arithmetic as tf.image.central_crop)."""
    top = tf.cast((tf.cast(height, tf.float64) * (1 - EVAL_CENTRAL_FRACTION)) / 2, tf.int32)
    left = tf.cast((tf.cast(width, tf.float64) * (1 - EVAL_CENTRAL_FRACTION)) / 2, tf.int32)
    return tf.stack([top, left, height - 2 * top, width - 2 * left])


def preprocess_for_eval(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded image (one scalar string) -> float32 [S, S, 3] in [-1, 1], the central share
    EVAL_CENTRAL_FRACTION of it (the whole image) resized.

    JPEGs decode only the crop window; any other format TensorFlow reads (PNG, GIF, BMP) is
    decoded whole, so the exported model serves whatever a client sends.
    """

    def jpeg() -> tf.Tensor:
        shape = tf.io.extract_jpeg_shape(image_bytes, output_type=tf.int32)
        return tf.io.decode_and_crop_jpeg(
            image_bytes, _central_window(shape[0], shape[1]), channels=3
        )

    def other() -> tf.Tensor:
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        window = _central_window(tf.shape(image)[0], tf.shape(image)[1])
        return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])

    image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    image = tf.clip_by_value(image / 255.0, 0.0, 1.0)
    return _to_unit_range(image)


def eval_dataset(
    data_uri: str, manifest: Manifest, split: str, image_size: int, batch_size: int
) -> tf.data.Dataset:
    """Every example of a split exactly once, in batches (the last one may be partial)."""
    files = manifest.shard_uris(data_uri, split)
    if not files:
        raise ValueError(f"the dataset has no {split} shards")
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), 8))
    offset = manifest.label_offset

    def load(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image_bytes, label = _parse(serialized, offset)
        return preprocess_for_eval(image_bytes, image_size), label

    ds = ds.map(load, num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=False).prefetch(AUTOTUNE)


# ---------------------------------------------------------------- damaged data


def damaged_shard_error(data_uri: str, manifest: Manifest, split: str, exc: Exception) -> UserError:
    """One sentence naming the shard behind a DataLossError (TensorFlow's names none).

    Reads the split's shards record by record (checksums only, no decoding), which costs a pass
    over the data; it runs once, after a failure, instead of a traceback that a restarted pod
    would print forever.
    """
    for uri in manifest.shard_uris(data_uri, split):
        try:
            for _ in tf.data.TFRecordDataset(uri):
                pass
        except tf.errors.OpError as damaged:
            return UserError(
                f"the shard {uri} is damaged ({first_line(damaged)}); rerun preprocess or copy "
                "the dataset again."
            )
    return UserError(
        f"the {split} data of {data_uri} is damaged ({first_line(exc)}); rerun preprocess or "
        "copy the dataset again."
    )
