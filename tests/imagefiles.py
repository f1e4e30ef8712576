"""Real image files of every kind people keep in folders, made on the spot for tests.

Each maker returns the file's bytes. Pictures are four flat colour quadrants, so a test can
check where colours ended up (orientation) and what they became (alpha, 16-bit, CMYK).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

# top-left, top-right, bottom-left, bottom-right
QUADRANTS = ((200, 30, 30), (30, 160, 40), (40, 60, 200), (230, 210, 40))


def quadrants(width: int, height: int) -> np.ndarray:
    """An RGB picture of four flat colour quadrants."""
    pixels = np.zeros((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    pixels[:h2, :w2], pixels[:h2, w2:] = QUADRANTS[0], QUADRANTS[1]
    pixels[h2:, :w2], pixels[h2:, w2:] = QUADRANTS[2], QUADRANTS[3]
    return pixels


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A busier picture (gradients and noise): compresses like a photo, not like a flat one."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width, 1), y * 255 / max(height, 1), (x + y) % 256], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def rgb(width: int, height: int) -> Image.Image:
    return Image.fromarray(quadrants(width, height))


def jpeg(width: int = 64, height: int = 48, **options: object) -> bytes:
    return encode(rgb(width, height), "JPEG", quality=95, **options)


def jpeg_progressive(width: int = 64, height: int = 48) -> bytes:
    return jpeg(width, height, progressive=True)


def jpeg_cmyk(width: int = 64, height: int = 48) -> bytes:
    return encode(rgb(width, height).convert("CMYK"), "JPEG", quality=95)


def jpeg_gray(width: int = 64, height: int = 48) -> bytes:
    return encode(rgb(width, height).convert("L"), "JPEG", quality=95)


def jpeg_oriented(width: int, height: int, orientation: int) -> bytes:
    """A JPEG whose stored pixels are width x height, with an EXIF orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(rgb(width, height), "JPEG", quality=95, exif=exif)


def png(width: int = 64, height: int = 48) -> bytes:
    return encode(rgb(width, height), "PNG")


def png_gray(width: int = 64, height: int = 48) -> bytes:
    return encode(rgb(width, height).convert("L"), "PNG")


def png_palette(width: int = 64, height: int = 48) -> bytes:
    return encode(rgb(width, height).quantize(16), "PNG")


def png_alpha(width: int = 64, height: int = 48) -> bytes:
    """RGBA whose left half is fully transparent: it must come out white."""
    rgba = rgb(width, height).convert("RGBA")
    alpha = np.full((height, width), 255, np.uint8)
    alpha[:, : width // 2] = 0
    rgba.putalpha(Image.fromarray(alpha))
    return encode(rgba, "PNG")


def png_palette_transparent(width: int = 64, height: int = 48) -> bytes:
    image = rgb(width, height).quantize(8)
    image.info["transparency"] = 0
    return encode(image, "PNG", transparency=0)


def png_gray16(width: int = 64, height: int = 48, value: int = 0x8000) -> bytes:
    """16-bit grey, every pixel `value` (of 65535)."""
    pixels = np.full((height, width), value, np.uint16)
    return encode(Image.fromarray(pixels), "PNG")


def png_rgb16(width: int = 64, height: int = 48) -> bytes:
    """16-bit-per-channel RGB (48-bit), written by hand: Pillow cannot save these."""
    pixels = quadrants(width, height).astype(">u2") * 257
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def gif(width: int = 64, height: int = 48) -> bytes:
    return encode(rgb(width, height).quantize(16), "GIF")


def gif_animated(width: int = 64, height: int = 48) -> bytes:
    frames = [rgb(width, height).quantize(16), Image.new("P", (width, height), 3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def bmp(width: int = 64, height: int = 48) -> bytes:
    return encode(rgb(width, height), "BMP")


def webp(width: int = 64, height: int = 48) -> bytes:
    return encode(rgb(width, height), "WEBP", quality=95)


def webp_alpha(width: int = 64, height: int = 48) -> bytes:
    rgba = rgb(width, height).convert("RGBA")
    rgba.putalpha(128)
    return encode(rgba, "WEBP", lossless=True)


def tiff(width: int = 64, height: int = 48) -> bytes:
    return encode(rgb(width, height), "TIFF")


# Every kind, by a name that says what it is (and the extension people give it).
KINDS: dict[str, tuple[Callable[[], bytes], str]] = {
    "jpeg_baseline": (jpeg, ".jpg"),
    "jpeg_progressive": (jpeg_progressive, ".jpeg"),
    "jpeg_cmyk": (jpeg_cmyk, ".jpg"),
    "jpeg_gray": (jpeg_gray, ".JPG"),
    "png_rgb": (png, ".png"),
    "png_gray": (png_gray, ".png"),
    "png_palette": (png_palette, ".PNG"),
    "png_palette_transparent": (png_palette_transparent, ".png"),
    "png_alpha": (png_alpha, ".png"),
    "png_gray16": (png_gray16, ".png"),
    "png_rgb16": (png_rgb16, ".png"),
    "gif": (gif, ".gif"),
    "gif_animated": (gif_animated, ".GIF"),
    "bmp": (bmp, ".bmp"),
    "webp": (webp, ".webp"),
    "webp_alpha": (webp_alpha, ".WebP"),
    "tiff": (tiff, ".tif"),
    "png_named_jpg": (png, ".jpg"),
    "jpeg_named_png": (jpeg, ".png"),
    "jpeg_no_extension": (jpeg, ""),
}


def not_images() -> dict[str, tuple[bytes, str]]:
    """Files that must be skipped, with a word their reason must contain."""
    whole = encode(Image.fromarray(photo(256, 192)), "JPEG", quality=90)
    return {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (whole[: len(whole) // 2], "truncated"),
        "notes.txt": (b"shopping list: milk, eggs\n", "not an image"),
        "fake.png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image"),
        "half.png": (png(64, 48)[:120], "image"),
    }


# ---------------------------------------------------------------- folders and datasets


def write_file(path: str, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def make_folder(root: str, counts: dict[str, int], size: tuple[int, int] = (48, 40)) -> str:
    """root/<class>/<class>_NNN.jpg, a few of them PNG: `counts` images per class."""
    for c, (name, count) in enumerate(counts.items()):
        for i in range(count):
            picture = Image.fromarray(photo(*size, seed=c * 1000 + i))
            kind, ext = ("PNG", "png") if i % 4 == 3 else ("JPEG", "jpg")
            write_file(os.path.join(root, name, f"{name}_{i:03d}.{ext}"), encode(picture, kind))
    return root


def read_split(dataset_dir: str, shard_names: list[str]) -> list[dict[str, object]]:
    """Every record of the named shards, parsed and its image decoded by TensorFlow itself."""
    import tensorflow as tf

    features = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/channels": tf.io.FixedLenFeature([], tf.int64),
        "image/colorspace": tf.io.FixedLenFeature([], tf.string),
        "image/format": tf.io.FixedLenFeature([], tf.string),
        "image/filename": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/class/text": tf.io.FixedLenFeature([], tf.string),
    }
    out = []
    for name in shard_names:
        for raw in tf.data.TFRecordDataset(os.path.join(dataset_dir, name)):
            example = tf.io.parse_single_example(raw, features)
            record = {key.split("/", 1)[1]: value.numpy() for key, value in example.items()}
            record["decoded_shape"] = tuple(tf.io.decode_jpeg(example["image/encoded"]).shape)
            record["shard"] = name
            out.append(record)
    return out
