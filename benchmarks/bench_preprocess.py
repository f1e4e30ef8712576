"""Benchmark: `python -m preprocess` against the classic build_image_data.py logic.

Both run as separate whole processes, timed from process start to exit, on the same
generated data (real photos that scikit-image ships, varied by crop, resize and noise):

  imagenet  5,000 images of about 500x375, 10% PNG     target: >= 3x the baseline's images/s
  phone     200 photos of 4032x3024 (JPEG q92, about 3 MB, EXIF-rotated ones among them)
                                                       target: >= 10x the baseline's images/s
                                                       and <= 20% of its output bytes

The baseline is the classic tool's logic: one TF1-style session shared by N threads; read each
file; PNG (by name) decoded and re-encoded as JPEG at quality 100; every JPEG decoded fully to
validate it and read its size; an Example with the classic keys; never resized.

    .venv/bin/python benchmarks/bench_preprocess.py              # full size (a few minutes)
    .venv/bin/python benchmarks/bench_preprocess.py --scale 0.1  # quick check

Generated data is cached (--cache-dir); outputs go to a scratch folder that is removed.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DATA_VERSION = 4  # bump when the generated data changes, so old caches are not reused
SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
           "retina")  # fmt: skip
DATASETS = {
    # name: (images at scale 1, classes, targets)
    "imagenet": (5000, 10, {"speed": 3.0}),
    "phone": (200, 4, {"speed": 10.0, "bytes": 0.20}),
}
VAL_FRACTION = 0.1


# ---------------------------------------------------------------- generated data


def dataset_dir(cache_dir: str, name: str, count: int) -> str:
    """The cached image folder (train/ and val/), generated on first use."""
    root = os.path.join(cache_dir, f"{name}-{count}-v{DATA_VERSION}")
    if os.path.exists(os.path.join(root, ".complete")):
        return root
    shutil.rmtree(root, ignore_errors=True)
    classes = DATASETS[name][1]
    jobs = []
    for i in range(count):
        split = "val" if (i // classes) % round(1 / VAL_FRACTION) == 0 else "train"
        cls = f"class{i % classes:02d}"
        jobs.append((name, i, os.path.join(root, split, cls)))
    print(f"generating {count} {name} images in {root} (once; cached)", flush=True)
    started = time.monotonic()
    with multiprocessing.Pool() as pool:
        for done, _ in enumerate(pool.imap_unordered(_make_image, jobs, chunksize=8), 1):
            if done % max(1, count // 10) == 0:
                print(f"  {done}/{count}", flush=True)
    with open(os.path.join(root, ".complete"), "w") as f:
        f.write(f"{time.monotonic() - started:.0f} s\n")
    return root


def _make_image(job: tuple[str, int, str]) -> None:
    name, index, folder = job
    os.makedirs(folder, exist_ok=True)
    rng = _rng(index)
    if name == "imagenet":
        data, ext = _imagenet_like(rng, index)
        path = os.path.join(folder, f"img_{index:06d}.{ext}")
    else:
        data, ext = _phone_photo(rng, index)
        path = os.path.join(folder, f"IMG_{index:04d}.{ext}")
    with open(path, "wb") as f:
        f.write(data)


def _rng(index: int):  # noqa: ANN202 - numpy Generator
    import numpy as np

    return np.random.default_rng(1000 + index)


_photos_cache: dict = {}


def _source(rng):  # noqa: ANN001, ANN202 - a PIL image of a photo scikit-image ships
    from PIL import Image
    from skimage import data

    name = SOURCES[int(rng.integers(len(SOURCES)))]
    if name not in _photos_cache:
        _photos_cache[name] = Image.fromarray(getattr(data, name)()).convert("RGB")
    return _photos_cache[name]


def _crop(photo, rng, aspect: float):  # noqa: ANN001, ANN202
    """A random crop of the given width/height aspect covering 40-100% of what fits."""
    width, height = photo.size
    fit_w = min(width, int(height * aspect))
    scale = rng.uniform(0.63, 1.0)
    w = max(8, int(fit_w * scale))
    h = max(8, int(w / aspect))
    left = int(rng.integers(0, width - w + 1))
    top = int(rng.integers(0, height - h + 1))
    return photo.crop((left, top, left + w, top + h))


def _noisy(image, rng, sigma: float):  # noqa: ANN001, ANN202
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image, dtype=np.float32)
    noise = rng.standard_normal(pixels.shape, dtype=np.float32) * sigma
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def _imagenet_like(rng, index: int) -> tuple[bytes, str]:  # noqa: ANN001
    """About 500x375 (or 375x500, 500x333 ...), 60-120 kB; one in 20 bigger; one in 10 PNG."""
    from PIL import Image

    big, as_png = rng.random() < 0.05, rng.random() < 0.10
    long_side = int(rng.integers(600, 1001)) if big else 500
    short_side = int(long_side * rng.choice([0.75, 0.666, 0.8, 0.5625, 0.75]))
    portrait = rng.random() < 0.25
    size = (short_side, long_side) if portrait else (long_side, short_side)
    image = _crop(_source(rng), rng, size[0] / size[1]).resize(size, Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = _noisy(image, rng, float(rng.uniform(5, 12)))  # ImageNet JPEGs average ~110 kB
    out = io.BytesIO()
    if as_png:
        image.save(out, "PNG")
        return out.getvalue(), "png"
    image.save(out, "JPEG", quality=int(rng.integers(85, 97)))
    return out.getvalue(), "JPEG" if index % 3 == 0 else "jpg"


def _phone_photo(rng, index: int) -> tuple[bytes, str]:  # noqa: ANN001
    """4032x3024 at JPEG quality 92 with sensor-like noise (~3 MB); 3 in 10 stored rotated."""
    from PIL import Image

    image = _crop(_source(rng), rng, 4 / 3).resize((4032, 3024), Image.Resampling.BICUBIC)
    image = _noisy(image, rng, float(rng.uniform(4.5, 7.0)))
    exif = Image.Exif()
    exif[0x010F] = "BenchPhone"  # Make
    exif[0x0110] = "BP-12"  # Model
    exif[0x0112] = 6 if rng.random() < 0.3 else 1  # Orientation: held upright, or not
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92, exif=exif)
    return out.getvalue(), "JPG"


# ---------------------------------------------------------------- the classic baseline


def baseline_main(train_dir: str, val_dir: str, out_dir: str, threads: int) -> None:
    """build_image_data.py's logic, as it was: run in its own process by the benchmark."""
    import threading

    import numpy as np
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()

    class ImageCoder:
        def __init__(self) -> None:
            self._sess = tf.compat.v1.Session()
            self._png_data = tf.compat.v1.placeholder(dtype=tf.string)
            image = tf.image.decode_png(self._png_data, channels=3)
            self._png_to_jpeg = tf.image.encode_jpeg(image, format="rgb", quality=100)
            self._decode_jpeg_data = tf.compat.v1.placeholder(dtype=tf.string)
            self._decode_jpeg = tf.image.decode_jpeg(self._decode_jpeg_data, channels=3)

        def png_to_jpeg(self, image_data: bytes) -> bytes:
            return self._sess.run(self._png_to_jpeg, feed_dict={self._png_data: image_data})

        def decode_jpeg(self, image_data: bytes):  # noqa: ANN202
            image = self._sess.run(
                self._decode_jpeg, feed_dict={self._decode_jpeg_data: image_data}
            )
            assert len(image.shape) == 3 and image.shape[2] == 3
            return image

    def int64(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    def raw(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def process_image(filename: str, coder: ImageCoder):  # noqa: ANN202
        with tf.io.gfile.GFile(filename, "rb") as f:
            image_data = f.read()
        if filename.endswith(".png"):
            image_data = coder.png_to_jpeg(image_data)
        image = coder.decode_jpeg(image_data)
        return image_data, image.shape[0], image.shape[1]

    def batch(coder, thread_index, ranges, name, filenames, texts, labels, num_shards) -> None:  # noqa: ANN001
        num_threads = len(ranges)
        shards_per_batch = num_shards // num_threads
        shard_ranges = np.linspace(
            ranges[thread_index][0], ranges[thread_index][1], shards_per_batch + 1
        ).astype(int)
        for s in range(shards_per_batch):
            shard = thread_index * shards_per_batch + s
            output = os.path.join(out_dir, f"{name}-{shard:05d}-of-{num_shards:05d}")
            with tf.io.TFRecordWriter(output) as writer:
                for i in range(shard_ranges[s], shard_ranges[s + 1]):
                    image_buffer, height, width = process_image(filenames[i], coder)
                    feature = {
                        "image/height": int64(height),
                        "image/width": int64(width),
                        "image/colorspace": raw(b"RGB"),
                        "image/channels": int64(3),
                        "image/class/label": int64(labels[i]),
                        "image/class/text": raw(texts[i].encode()),
                        "image/format": raw(b"JPEG"),
                        "image/filename": raw(os.path.basename(filenames[i]).encode()),
                        "image/encoded": raw(image_buffer),
                    }
                    example = tf.train.Example(features=tf.train.Features(feature=feature))
                    writer.write(example.SerializeToString())

    def process_split(name: str, data_dir: str, num_shards: int) -> None:
        unique = sorted(os.listdir(data_dir))
        filenames, texts, labels = [], [], []
        for label_index, text in enumerate(unique, start=1):  # 0 was "background"
            matching = tf.io.gfile.glob(f"{data_dir}/{text}/*")
            filenames += matching
            texts += [text] * len(matching)
            labels += [label_index] * len(matching)
        order = list(range(len(filenames)))
        random.seed(12345)
        random.shuffle(order)
        filenames = [filenames[i] for i in order]
        texts = [texts[i] for i in order]
        labels = [labels[i] for i in order]
        spacing = np.linspace(0, len(filenames), threads + 1).astype(int)
        ranges = [[spacing[i], spacing[i + 1]] for i in range(threads)]
        coder = ImageCoder()
        workers = [
            threading.Thread(
                target=batch,
                args=(coder, i, ranges, name, filenames, texts, labels, num_shards),
            )
            for i in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    os.makedirs(out_dir, exist_ok=True)
    process_split("validation", val_dir, threads)
    process_split("train", train_dir, threads)


# ---------------------------------------------------------------- running and reporting


def timed(command: list[str]) -> float:
    """Seconds from process start to exit; the command must succeed."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def count_and_bytes(out_dir: str) -> tuple[int, int]:
    from common.records import iter_records

    count = size = 0
    for path in glob.glob(os.path.join(out_dir, "*-of-*")):
        size += os.path.getsize(path)
        with open(path, "rb") as f:
            count += sum(1 for _ in iter_records(f))
    return count, size


def describe(data: str) -> str:
    files = [p for p in glob.glob(os.path.join(data, "*", "*", "*"))]
    pngs = sum(p.endswith(".png") for p in files)
    size = sum(os.path.getsize(p) for p in files)
    return (
        f"{len(files)} files, {size / 1e6:.0f} MB ({size / len(files) / 1e3:.0f} kB each), "
        f"{100 * pngs / len(files):.0f}% PNG"
    )


def bench(name: str, data: str, work: str, workers: int, repeat: int) -> dict:
    """Both tools, alternately, `repeat` times each; the best time of each counts."""
    train, val = os.path.join(data, "train"), os.path.join(data, "val")
    print(f"{name}: {describe(data)}", flush=True)
    commands = {
        "baseline": [sys.executable, os.path.abspath(__file__), "--baseline", train, val],
        "preprocess": [sys.executable, "-m", "preprocess", "--train-dir", train, "--val-dir", val,
                       "--workers", str(workers), "--out"],
    }  # fmt: skip
    figures: dict[str, dict] = {}
    for round_ in range(repeat):
        for tool, command in commands.items():
            out = os.path.join(work, f"{name}-{tool}")
            shutil.rmtree(out, ignore_errors=True)
            full = [*command, out, str(workers)] if tool == "baseline" else [*command, out]
            seconds = timed(full)
            images, size = count_and_bytes(out)
            shutil.rmtree(out, ignore_errors=True)
            print(f"  round {round_ + 1}: {tool:10s} {seconds:6.2f} s", flush=True)
            best = figures.get(tool)
            if best is None or seconds < best["seconds"]:
                figures[tool] = {"seconds": seconds, "images": images, "bytes": size}
    return figures


def report(name: str, figures: dict) -> list[str]:
    base, ours = figures["baseline"], figures["preprocess"]
    lines = []
    for tool, f in figures.items():
        rate = f["images"] / f["seconds"]
        lines.append(
            f"{name:9s} {tool:10s} {f['images']:6d} images {f['seconds']:7.2f} s "
            f"{rate:8.1f} images/s {f['bytes'] / 1e6:9.1f} MB"
        )
    speedup = (ours["images"] / ours["seconds"]) / (base["images"] / base["seconds"])
    byte_ratio = ours["bytes"] / base["bytes"]
    targets = DATASETS[name][2]
    verdict = f"speed-up {speedup:.2f}x (target >= {targets['speed']:g}x: "
    verdict += "met" if speedup >= targets["speed"] else "MISSED"
    verdict += f"); output {100 * byte_ratio:.1f}% of the baseline's bytes"
    if "bytes" in targets:
        met = byte_ratio <= targets["bytes"]
        verdict += f" (target <= {100 * targets['bytes']:.0f}%: {'met' if met else 'MISSED'})"
    lines.append(f"{name:9s} {verdict}")
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--baseline":
        train, val, out, threads = sys.argv[2:6]
        baseline_main(train, val, out, int(threads))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the full image counts")
    p.add_argument(
        "--cache-dir",
        default=os.path.join(tempfile.gettempdir(), "bench_preprocess_cache"),
        help="where generated images are kept between runs (default: %(default)s)",
    )
    p.add_argument("--work-dir", help="scratch folder for outputs (default: a new temp folder)")
    p.add_argument("--only", choices=sorted(DATASETS), help="run one dataset only")
    p.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="threads for the baseline, processes for ours (default: all cores)",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of each tool; the best counts")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()

    work = args.work_dir or tempfile.mkdtemp(prefix="bench_preprocess_")
    os.makedirs(work, exist_ok=True)
    print(
        f"{os.cpu_count()} CPU(s); {args.workers} worker(s) each; scale {args.scale:g}; "
        f"best of {args.repeat} runs, whole process"
    )
    results, lines = {}, []
    try:
        for name in [args.only] if args.only else list(DATASETS):
            count = max(20, round(DATASETS[name][0] * args.scale))
            data = dataset_dir(args.cache_dir, name, count)
            results[name] = bench(name, data, work, args.workers, args.repeat)
            lines += report(name, results[name])
            print("\n".join(report(name, results[name])), flush=True)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print("\nsummary\n" + "\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
