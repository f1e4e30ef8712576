"""A small, learnable sample image folder made from photos that scikit-image ships.

Six classes (cat, astronaut, coffee, rocket, galaxies, retina: enough for a top-5), each image
a random crop of its photo, maybe flipped, scaled and noisy: different enough to learn from,
deterministic for a given seed.
Most are saved as JPEG, some as PNG, as in a real folder. scikit-image is only needed here.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
from PIL import Image

from common.args import ArgumentParser, positive_int
from common.cli import UserError, setup_logging

log = logging.getLogger("preprocess")

# class name -> skimage.data function
CLASSES = {
    "cat": "chelsea",
    "astronaut": "astronaut",
    "coffee": "coffee",
    "rocket": "rocket",
    "galaxies": "hubble_deep_field",
    "retina": "retina",
}
PNG_EVERY = 4  # every fourth image is a PNG
MARKER = ".preprocess-sample.json"  # says the folder is ours to regenerate (hidden: not litter)


def make_sample_folders(
    out_dir: str,
    per_class: int = 30,
    size: int = 160,
    seed: int = 0,
    val_per_class: int | None = None,
) -> None:
    """Write out_dir/train/<class>/* and out_dir/val/<class>/* (val: a quarter, at least 2)."""
    if per_class < 1 or size < 16:
        raise UserError("the sample needs at least 1 image per class and a size of 16 px or more.")
    val_per_class = max(2, per_class // 4) if val_per_class is None else val_per_class
    _claim(out_dir, {"per_class": per_class, "size": size, "seed": seed, "val": val_per_class})
    photos = _photos()
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", val_per_class)):
        for name, photo in photos.items():
            folder = os.path.join(out_dir, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                image = _variant(photo, size, rng)
                ext = "png" if i % PNG_EVERY == PNG_EVERY - 1 else "jpg"
                path = os.path.join(folder, f"{name}_{i:04d}.{ext}")
                image.save(path, **({"quality": 90} if ext == "jpg" else {}))
    log.info(
        "wrote %d train and %d val images of %d classes to %s",
        per_class * len(photos),
        val_per_class * len(photos),
        len(photos),
        out_dir,
    )


def _claim(out_dir: str, settings: dict[str, int]) -> None:
    """Refuse to write into a folder holding anything but an earlier sample of ours."""
    marker = os.path.join(out_dir, MARKER)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.exists(marker):
        raise UserError(
            f"{out_dir} already holds files that are not a sample made by this command; "
            "choose an empty or new folder."
        )
    try:
        os.makedirs(out_dir, exist_ok=True)
        with open(marker, "w") as f:
            json.dump(settings, f)
    except OSError as exc:
        raise UserError(f"cannot write to {out_dir}: {exc.strerror or exc}.") from exc


def _photos() -> dict[str, np.ndarray]:
    try:
        from skimage import data
    except ImportError as exc:
        raise UserError(
            "the sample maker needs scikit-image (pip install scikit-image); "
            "it uses the photos scikit-image ships."
        ) from exc
    return {name: getattr(data, func)() for name, func in CLASSES.items()}


def _variant(photo: np.ndarray, size: int, rng: np.random.Generator) -> Image.Image:
    """A random crop (40-100% of the side), maybe mirrored, resized to size, with noise."""
    height, width = photo.shape[:2]
    side = int(min(height, width) * rng.uniform(0.4, 1.0))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(photo[top : top + side, left : left + side])
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out_size = max(16, int(size * rng.uniform(0.8, 1.2)))
    crop = crop.resize((out_size, out_size), Image.Resampling.BICUBIC)
    noise = rng.normal(0.0, rng.uniform(2.0, 10.0), (out_size, out_size, 3))
    pixels = np.clip(np.asarray(crop, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(
        prog="python -m preprocess sample",
        description="Write a small image folder (train/ and val/, one sub-folder per class) "
        "made from photos scikit-image ships, to try preprocess and training on.",
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="folder to create (or an earlier sample)"
    )
    p.add_argument(
        "--per-class",
        type=positive_int,
        metavar="N",
        default=30,
        help="train images a class (%(default)s)",
    )
    p.add_argument(
        "--size", type=positive_int, default=160, metavar="PX", help="about PX square (%(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same images")
    args = p.parse_args(argv)
    setup_logging()
    make_sample_folders(args.out, args.per_class, args.size, args.seed)
    return 0
