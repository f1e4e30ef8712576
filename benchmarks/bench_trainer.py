"""Trainer speed: the input pipeline and the training loop, against their baselines.

    python benchmarks/bench_trainer.py            # CPU: both checks, a few minutes on 2 cores
    python benchmarks/bench_trainer.py --gpu      # GPU: 299 px, batch 128, mixed precision

1. Input pipeline alone at 299 px on ImageNet-like data (about 500x375 JPEGs in TFRecords,
   made here from scikit-image's sample photos by random crops, resizes, noise and colour
   casts), against a tf.data version of the classic input (full decode_jpeg, a
   sample_distorted_bounding_box crop, resize, flip and colour distortion per image) with the
   same parallelism. Target: at least 2x its images/s.
2. Training throughput of the real trainer (its loop, its input pipeline on that data)
   against plain `model.fit` of the same model on in-memory synthetic data, same image size
   and batch. Target: at least 0.95x. Both skip their first steps (tracing, warm-up).

Figures are printed, not asserted: timings on a shared machine vary. `--gpu` does 2 at 299 px,
batch 128, mixed precision, on every visible GPU, and needs a few minutes on one H200.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import manifest as manifest_lib  # noqa: E402
from common import records  # noqa: E402

# ---------------------------------------------------------------- ImageNet-like data


def _photos() -> list[np.ndarray]:
    """scikit-image's bundled photos, as RGB uint8 (grey ones too, like some ImageNet images)."""
    from skimage import color
    from skimage import data as samples

    photos = []
    names = "astronaut chelsea coffee rocket hubble_deep_field immunohistochemistry retina"
    names += " camera grass gravel brick moon"
    for name in names.split():
        try:
            image = getattr(samples, name)()
        except Exception:  # noqa: BLE001 - some samples need a download; the others suffice
            continue
        photos.append(color.gray2rgb(image) if image.ndim == 2 else image[..., :3])
    return photos


def _imagenet_like(photo: np.ndarray, rng: np.random.Generator) -> bytes:
    from PIL import Image

    h, w = photo.shape[:2]
    ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    size = (500, 375) if rng.random() < 0.7 else (375, 500)  # landscape mostly, as in ImageNet
    image = Image.fromarray(photo[top : top + ch, left : left + cw]).resize(size, Image.BILINEAR)
    pixels = np.asarray(image, np.float32) * rng.uniform(0.7, 1.2, 3) + rng.normal(0, 6, (1, 1, 1))
    pixels += rng.normal(0, rng.uniform(8, 18), pixels.shape)  # ImageNet-like entropy: ~110 KB
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
        out, "JPEG", quality=int(rng.integers(88, 97))
    )
    return out.getvalue()


def make_dataset(root: str, count: int, shards: int = 8, classes: int = 10) -> str:
    """count ImageNet-like training images in `shards` TFRecord files, with a manifest."""
    uri = os.path.join(root, f"imagenet-like-{count}")
    if os.path.exists(os.path.join(uri, manifest_lib.MANIFEST_NAME)):
        return uri
    os.makedirs(uri, exist_ok=True)
    rng = np.random.default_rng(0)
    photos = _photos()
    labels = [f"class{i}" for i in range(classes)]
    names = [records.shard_name(records.TRAIN, i, shards) for i in range(shards)]
    files = [open(os.path.join(uri, name), "wb") for name in names]  # noqa: SIM115
    started = time.perf_counter()
    for i in range(count):
        jpeg = _imagenet_like(photos[i % len(photos)], rng)
        record = records.image_example(
            jpeg=jpeg, height=375, width=500, filename=f"{i}.jpg", label=i % classes,
            text=labels[i % classes],
        )  # fmt: skip
        files[i % shards].write(records.frame_record(record))
    for f in files:
        f.close()
    split = manifest_lib.SplitInfo(count, {label: count // classes for label in labels}, names)
    manifest_lib.save(uri, manifest_lib.Manifest("imagenet-like", labels, {records.TRAIN: split}))
    seconds = time.perf_counter() - started
    print(f"made {count} ImageNet-like JPEGs in {shards} shards ({seconds:.0f} s)")
    return uri


# ---------------------------------------------------------------- 1. input pipeline


def classic_dataset(uri: str, manifest, image_size: int, batch_size: int):  # noqa: ANN001, ANN201
    """A tf.data version of the classic input: every step per image, on the whole image."""
    import tensorflow as tf

    features = {
        records.KEY_ENCODED: tf.io.FixedLenFeature([], tf.string),
        records.KEY_LABEL: tf.io.FixedLenFeature([], tf.int64),
    }

    def preprocess(serialized):  # noqa: ANN001, ANN202
        example = tf.io.parse_single_example(serialized, features)
        image = tf.io.decode_jpeg(example[records.KEY_ENCODED], channels=3)
        image = tf.image.convert_image_dtype(image, tf.float32)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(image),
            bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
            min_object_covered=0.1,
            aspect_ratio_range=(0.75, 1.33),
            area_range=(0.05, 1.0),
            max_attempts=100,
            use_image_if_no_bounding_boxes=True,
        )
        image = tf.slice(image, begin, size)
        image = tf.image.resize(image, [image_size, image_size])
        image = tf.image.random_flip_left_right(image)
        image = tf.image.random_brightness(image, max_delta=32.0 / 255.0)
        image = tf.image.random_saturation(image, lower=0.5, upper=1.5)
        image = tf.image.random_hue(image, max_delta=0.2)
        image = tf.image.random_contrast(image, lower=0.5, upper=1.5)
        image = (tf.clip_by_value(image, 0.0, 1.0) - 0.5) * 2.0
        return image, tf.cast(example[records.KEY_LABEL], tf.int32)

    files = manifest.shard_uris(uri, records.TRAIN)
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files)).repeat()
    ds = ds.interleave(
        tf.data.TFRecordDataset, cycle_length=len(files), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    )  # fmt: skip
    ds = ds.shuffle(min(2048, manifest.count(records.TRAIN)))
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def images_per_second(ds, batches: int, warmup: int = 10) -> tuple[float, float]:  # noqa: ANN001
    """(images per wall-clock second, images per CPU-second of this process, all threads).

    The second figure is what a pipeline costs, steady even when other work shares the CPUs.
    """
    iterator = iter(ds)
    for _ in range(warmup):
        next(iterator)
    started, cpu_started, images = time.perf_counter(), time.process_time(), 0
    for _ in range(batches):
        images += int(next(iterator)[0].shape[0])
    return images / (time.perf_counter() - started), images / (time.process_time() - cpu_started)


def bench_input(uri: str, image_size: int, batch_size: int, batches: int, rounds: int) -> None:
    import tensorflow as tf

    from common import data

    manifest = manifest_lib.load(uri)

    def ours() -> tf.data.Dataset:
        return data.train_dataset(uri, manifest, image_size, batch_size)

    def ours_all_on_cpu() -> tf.data.Dataset:
        # The colour step too, as if there were no accelerator to run it in the training step.
        return ours().map(lambda x, y: (data.augment_batch(x), y), tf.data.AUTOTUNE)

    def classic() -> tf.data.Dataset:
        return classic_dataset(uri, manifest, image_size, batch_size)

    variants = {
        "classic (full decode, per-image ops)": classic,
        "train_dataset (colour on the device)": ours,
        "train_dataset + augment_batch on CPU": ours_all_on_cpu,
    }
    best: dict[str, tuple[float, float]] = {}
    for _ in range(rounds):  # alternate, so that a busy moment hurts all alike
        for name, make in variants.items():
            wall, cpu = images_per_second(make(), batches)
            best[name] = max(best.get(name, (0.0, 0.0)), (wall, cpu))
    where = f"{image_size} px, batch {batch_size}, {os.cpu_count()} CPUs, best of {rounds}"
    print(f"input pipeline alone ({where}):")
    base_wall, base_cpu = best[next(iter(variants))]
    for name, (wall, cpu) in best.items():
        print(f"  {name}: {wall:7.1f} images/s ({wall / base_wall:.2f}x), "
              f"{cpu:7.1f} images/CPU-second ({cpu / base_cpu:.2f}x)")  # fmt: skip
    print("  target: train_dataset >= 2x classic images/s")


# ---------------------------------------------------------------- 2. training loop


def fit_synthetic(size: int, batch: int, steps: int, skip: int, mixed: bool, xla: bool) -> float:
    """examples/s of plain model.fit, same model and loss, on one in-memory synthetic batch."""
    import keras
    import tensorflow as tf

    from common.model import build_classifier

    gpus = tf.config.list_physical_devices("GPU")
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    strategy = tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    with strategy.scope():
        model = build_classifier(10, size)
        model.compile(
            optimizer=keras.optimizers.RMSprop(0.001, rho=0.9, momentum=0.9, epsilon=1.0),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
            jit_compile=xla,
        )

    class Clock(keras.callbacks.Callback):
        start = 0.0

        def on_train_batch_end(self, index: int, logs=None) -> None:  # noqa: ANN001
            if index + 1 == skip:
                float(self.model.optimizer.iterations.numpy())  # wait for the step
                Clock.start = time.perf_counter()

    model.fit(ds, epochs=1, steps_per_epoch=steps, callbacks=[Clock()], verbose=0)
    float(model.optimizer.iterations.numpy())  # wait for the last step (GPUs run ahead)
    seconds = time.perf_counter() - Clock.start
    keras.mixed_precision.set_global_policy("float32")
    return (steps - skip) * batch / seconds


def trainer_real(
    uri: str, size: int, batch: int, steps: int, skip: int, mixed: bool, xla: bool
) -> float:
    """examples/s of the real trainer (loop + input pipeline), after its first `skip` steps."""
    from trainer.config import TrainConfig
    from trainer.loop import train
    from trainer.metrics import TrainMetrics
    from trainer.prepare import prepare
    from trainer.signals import StopRequest

    with tempfile.TemporaryDirectory() as run_dir:
        config = TrainConfig(
            data=uri, run_dir=run_dir, steps=steps, image_size=size, batch_size=batch,
            weights="none", fine_tune="all", precision="mixed" if mixed else "float32", xla=xla,
            log_every=skip,
            checkpoint_every=10**9, checkpoint_minutes=1e9,
        )  # fmt: skip
        result = train.run(prepare(config, set()), TrainMetrics("bench"), StopRequest())
    return result.examples_per_sec


def bench_training(
    uri: str, size: int, batch: int, steps: int, skip: int, rounds: int, mixed: bool, xla: bool
) -> None:
    fits, ours = [], []
    for _ in range(rounds):  # alternate, so that a busy moment hurts both alike
        fits.append(fit_synthetic(size, batch, steps, skip, mixed, xla))
        ours.append(trainer_real(uri, size, batch, steps, skip, mixed, xla))
    f, o = max(fits), max(ours)
    precision = "mixed float16" if mixed else "float32"
    where = f"{size} px, batch {batch}, {steps - skip} timed steps, {precision}"
    print(f"training throughput ({where}{', XLA' if xla else ''}, best of {rounds}):")
    print(f"  model.fit, in-memory synthetic data: {f:7.1f} examples/s")
    print(f"  trainer, real input pipeline:        {o:7.1f} examples/s ({o / f:.2f}x)")
    print("  target: the trainer >= 0.95x model.fit")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gpu", action="store_true", help="299 px, batch 128, mixed precision")
    p.add_argument("--out", default="bench-out", help="where the generated data is kept")
    p.add_argument("--images", type=int, default=None, help="ImageNet-like images to generate")
    p.add_argument("--rounds", type=int, default=2, help="alternating repeats; best is shown")
    p.add_argument("--xla", action="store_true", help="XLA for both training variants")
    p.add_argument("--skip-input", action="store_true")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument(
        "--image-size", type=int, help="training check (default 299 with --gpu, else 128)"
    )
    p.add_argument(
        "--batch-size", type=int, help="training check (default 128 with --gpu, else 16)"
    )
    p.add_argument("--steps", type=int, help="training check (default 300 with --gpu, else 50)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    uri = make_dataset(os.path.abspath(args.out), args.images or (2048 if args.gpu else 1024))
    if not args.skip_input:
        batch, batches = (128, 40) if args.gpu else (64, 24)
        bench_input(uri, 299, batch, batches, rounds=args.rounds)
    if not args.skip_training:
        size = args.image_size or (299 if args.gpu else 128)
        batch = args.batch_size or (128 if args.gpu else 16)
        steps = args.steps or (300 if args.gpu else 50)
        rounds = 1 if args.gpu else args.rounds
        # The first steps (tracing, autotuning, GPU warm-up) are not timed.
        skip = max(2, steps // 6 if args.gpu else steps // 5)
        bench_training(uri, size, batch, steps, skip, rounds=rounds, mixed=args.gpu, xla=args.xla)


if __name__ == "__main__":
    main()
