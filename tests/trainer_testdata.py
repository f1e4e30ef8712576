"""Small learnable datasets for the trainer's tests, written with common.records + manifest.

Each class is a colour 120 degrees of hue away from the others (so the trainer's colour
augmentation cannot turn one into another), drawn as noisy blobs on a noisy background.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from common import manifest as manifest_lib
from common import records, storage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def jpeg_image(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 96) -> bytes:
    """A JPEG mostly of one colour, shaded at random, with a few grey blobs as distractors."""
    h, w = size, int(size * rng.uniform(1.0, 1.4))
    yy, xx = np.mgrid[0:h, 0:w] / size
    shade = rng.uniform(0.6, 1.0) + 0.2 * np.sin(rng.uniform(1, 4) * xx + rng.uniform(0, 6))
    image = shade[..., None] * np.array(colour, np.float32)
    for _ in range(2):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, w / size), rng.uniform(0.1, 0.25)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.integers(60, 200)
    image += rng.normal(0, 6, image.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def write_dataset(
    uri: str,
    *,
    train_per_class: int = 24,
    val_per_class: int = 8,
    train_shards: int = 2,
    label_offset: int = 0,
    seed: int = 0,
    size: int = 96,
) -> manifest_lib.Manifest:
    """A complete dataset (shards, labels.txt, dataset.json) at uri, local or gs://."""
    rng = np.random.default_rng(seed)
    labels = list(COLOURS)
    splits = {}
    for split, per_class, num_shards in (
        (records.TRAIN, train_per_class, train_shards),
        (records.VALIDATION, val_per_class, 1),
    ):
        examples = [(label_id, i) for i in range(per_class) for label_id in range(len(labels))]
        shards: list[list[bytes]] = [[] for _ in range(num_shards)]
        for n, (label_id, i) in enumerate(examples):
            jpeg = jpeg_image(COLOURS[labels[label_id]], rng, size)
            record = records.image_example(
                jpeg=jpeg,
                height=size,
                width=size,
                filename=f"{labels[label_id]}/{split}-{i}.jpg",
                label=label_id + label_offset,
                text=labels[label_id],
            )
            shards[n % num_shards].append(records.frame_record(record))
        names, sizes = [], {}
        for index, shard in enumerate(shards):
            name = records.shard_name(split, index, num_shards)
            storage.write_bytes(storage.join(uri, name), b"".join(shard))
            names.append(name)
            sizes[name] = sum(map(len, shard))
        splits[split] = manifest_lib.SplitInfo(
            count=len(examples),
            per_class={label: per_class for label in labels},
            shards=names,
            shard_bytes=sizes,
        )
    manifest = manifest_lib.Manifest(
        name="colours", labels=labels, splits=splits, label_offset=label_offset
    )
    manifest_lib.save(uri, manifest)
    return manifest


def val_jpegs(per_class: int = 4, seed: int = 99) -> list[tuple[str, bytes]]:
    """Fresh (label, JPEG) pairs drawn like the dataset's, for calling an exported model."""
    rng = np.random.default_rng(seed)
    return [(name, jpeg_image(c, rng)) for _ in range(per_class) for name, c in COLOURS.items()]


# ---------------------------------------------------------------- running the trainer

# Tiny, quick runs: 75-pixel images, random backbone weights (no internet here).
QUICK = ["--image-size", "75", "--weights", "none"]


def trainer_command(data: str, run_dir: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", "trainer", "--data", data, "--run-dir", run_dir, *flags]


def run_trainer(
    data: str, run_dir: str, *flags: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `python -m trainer` to the end in a subprocess (its own TensorFlow, its own signals)."""
    return subprocess.run(
        trainer_command(data, run_dir, *flags),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def start_trainer(data: str, run_dir: str, *flags: str, log_path: str) -> subprocess.Popen:
    """Start `python -m trainer` in the background, its output going to log_path."""
    log = open(log_path, "w")  # noqa: SIM115 - the child owns it until it exits
    return subprocess.Popen(
        trainer_command(data, run_dir, *flags), stdout=log, stderr=subprocess.STDOUT, cwd=REPO
    )


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:  # noqa: ANN001
    """Poll condition() until true; fail with `what` after timeout or if proc died first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the trainer exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def error_lines(stderr: str) -> list[str]:
    """What the trainer said on stderr, less TensorFlow's import-time C++ chatter."""
    return [line for line in stderr.splitlines() if line.strip() and not TF_NOISE.match(line)]


TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl|I0000 |W0000 |To enable the following instructions)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_photos(root: str, per_class: int = 12) -> str:
    """Real photos: the sample folder `python -m preprocess sample` makes from scikit-image's
    photographs (6 classes), preprocessed under root (about 2 s); the dataset's URI."""
    images, data = os.path.join(root, "images"), os.path.join(root, "data")
    for command in (
        ["preprocess", "sample", "--out", images, "--per-class", str(per_class), "--size", "120"],
        ["preprocess", "--train-dir", os.path.join(images, "train"), "--val-dir",
         os.path.join(images, "val"), "--out", data],
    ):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True,
                              cwd=REPO, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
    return data


def one_error(capsys, main, argv: list[str]) -> str:  # noqa: ANN001
    """Run a command's main in-process: it must exit 2 with exactly one `error:` line on
    stderr, which is returned."""
    from common.cli import run_main

    try:
        code = run_main(main, argv)
    except SystemExit as exit_:  # argparse's errors exit from inside parse_args
        code = exit_.code
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]
