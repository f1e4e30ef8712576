"""Evaluation throughput on CPU against plain `model.predict` on the same model and batch.

    .venv/bin/python benchmarks/bench_evaluator.py [--images 256] [--image-size 299] [--batch 32]

Ours: the evaluator's real path (TFRecord shards -> decode -> central crop -> model -> exact
scores). Baseline: `model.predict` on the same number of images already decoded, resized and
in memory. Target: ours at least 0.9x the baseline's images/s.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from common import manifest as manifest_lib  # noqa: E402
from common import records, storage  # noqa: E402

CLASSES = 10


def write_validation_set(root: str, count: int) -> manifest_lib.Manifest:
    """ImageNet-like JPEGs (about 500x375) cut from scikit-image's photos."""
    import skimage.data

    photos = [skimage.data.chelsea(), skimage.data.astronaut(), skimage.data.coffee(),
              skimage.data.rocket()]
    rng = np.random.default_rng(0)
    framed = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        image = Image.fromarray(photo[y : y + ch, x : x + cw]).resize((500, 375))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=90)
        label = i % CLASSES
        framed.append(records.frame_record(records.image_example(
            jpeg=out.getvalue(), height=375, width=500, filename=f"{i}.jpg",
            label=label, text=f"class{label}",
        )))
    name = records.shard_name(records.VALIDATION, 0, 1)
    storage.write_bytes(storage.join(root, name), b"".join(framed))
    labels = [f"class{i}" for i in range(CLASSES)]
    split = manifest_lib.SplitInfo(count, {label: count // CLASSES for label in labels}, [name])
    manifest = manifest_lib.Manifest("bench", labels, {records.VALIDATION: split})
    manifest_lib.save(root, manifest)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    import tensorflow as tf

    from common.layout import Checkpoint
    from common.model import build_classifier
    from evaluator.evaluate import Evaluator, RunSetup

    root = tempfile.mkdtemp(prefix="bench-evaluator-")
    data = os.path.join(root, "data")
    manifest = write_validation_set(data, args.images)
    model = build_classifier(CLASSES, args.image_size)
    prefix = tf.train.Checkpoint(model=model).write(os.path.join(root, "ckpt-1"))

    setup = RunSetup(data, manifest, args.image_size, {})
    evaluator = Evaluator(args.batch)
    evaluator.score(setup, Checkpoint(1, prefix))  # warm-up: tracing, thread pools
    start = time.monotonic()
    result, _ = evaluator.score(setup, Checkpoint(1, prefix))
    ours = result["examples"] / (time.monotonic() - start)

    images = np.random.default_rng(0).uniform(
        -1, 1, (args.images, args.image_size, args.image_size, 3)
    ).astype(np.float32)
    model.predict(images[: args.batch], batch_size=args.batch, verbose=0)  # warm-up
    start = time.monotonic()
    model.predict(images, batch_size=args.batch, verbose=0)
    baseline = args.images / (time.monotonic() - start)

    print(f"evaluation, {args.images} images at {args.image_size} px, batch {args.batch}, "
          f"{os.cpu_count()} CPU cores")
    print(f"  model.predict, in-memory arrays : {baseline:7.1f} images/s")
    print(f"  evaluator, shards -> scores     : {ours:7.1f} images/s")
    print(f"  ratio                           : {ours / baseline:7.2f}x (target >= 0.90x)")


if __name__ == "__main__":
    main()
