"""Turn the bytes of any supported image file into the RGB JPEG a record stores.

Shared: preprocess stores these in its records; the evaluator feeds them to an exported model.

Recognition is by content, never by file name. The cheapest correct path wins: a JPEG that is
already what a record needs is validated (a full entropy decode at 1/8 scale, which catches
truncation as surely as a full decode) and stored byte for byte; everything else is decoded
no further than needed (JPEG DCT-domain scaling for big photos), turned upright, made RGB,
downscaled to the size limit and encoded once.
"""

from __future__ import annotations

import dataclasses
import io
import re
import warnings

from PIL import Image, ImageFile, UnidentifiedImageError

from common.cli import first_line

# What people keep in image folders. Phone JPEGs with a second frame appended open as "JPEG"
# and come back as format "MPO".
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
JPEG_QUALITY = 90
ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transposition that makes the picture upright.
_UPRIGHT = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}
_WHITE = (255, 255, 255)
# A marker: 0xFF (any number, as fill) and a code byte; in image data, 0xFF 0x00 is a stuffed
# 0xFF and 0xFF 0xD0-0xD7 are restart markers, so neither ends it.
_MARKER = re.compile(rb"\xff+([\x01-\xfe])")
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # no "+": a literal start is fast to find


class BadImage(Exception):
    """The file cannot become a record; the message says why, for the user."""


@dataclasses.dataclass(frozen=True)
class StoredImage:
    jpeg: bytes
    height: int
    width: int
    passed_through: bool  # the input's own bytes, unchanged


def to_stored_jpeg(data: bytes, max_side: int) -> StoredImage:
    """The record's JPEG for an image file's bytes; raises BadImage with a reason."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    image = _open(data)
    orientation = _orientation(image)
    if _can_pass_through(image, orientation, max_side):
        width, height = image.size  # before the validation's draft shrinks it
        problem = jpeg_structure_problem(data)
        if problem:
            raise BadImage(f"corrupt JPEG ({problem})")
        _validate_fully(image)
        return StoredImage(data, height, width, passed_through=True)
    target = scaled_size(image.size, max_side)
    if image.format in ("JPEG", "MPO") and target != image.size:
        image.draft(None, target)  # decode at 1/2, 1/4 or 1/8 scale, never below target
    try:
        image.load()
        rgb = _to_rgb(image)
    except Exception as exc:  # a damaged file can make a decoder raise almost anything
        raise BadImage(f"cannot decode image data ({first_line(exc, 160)})") from exc
    if rgb.size != target:
        # Bilinear with Pillow's antialiasing: smooth enough for training data at 500 px, and
        # about 40% cheaper than bicubic on the 5% of photos that need it.
        rgb = rgb.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
    for step in _UPRIGHT.get(orientation, ()):
        rgb = rgb.transpose(step)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=JPEG_QUALITY)
    return StoredImage(out.getvalue(), rgb.height, rgb.width, passed_through=False)


def scaled_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(width, height) with the longer side at most max_side; never upscales; 0 = no limit."""
    width, height = size
    longest = max(width, height)
    if not max_side or longest <= max_side:
        return size
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _open(data: bytes) -> ImageFile.ImageFile:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # odd metadata warns; the pixels decide
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError as exc:
        raise BadImage(
            "not an image (content not recognised as JPEG, PNG, GIF, BMP, WebP or TIFF)"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise BadImage(f"image too large to decode safely ({first_line(exc, 160)})") from exc
    except Exception as exc:  # as above: the file's fault, whatever a parser raises
        raise BadImage(f"damaged image header ({first_line(exc, 160)})") from exc
    if image.width < 1 or image.height < 1:
        raise BadImage("image has no pixels")
    # The bytes are in memory: hand the decoder all of them at once, not 64 kB at a time
    # (fewer suspensions; about 6% faster on big JPEGs).
    image.decodermaxblock = max(image.decodermaxblock, len(data))
    return image


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF must not cost the picture; Pillow raises many types
        return 1
    return value if value in _UPRIGHT else 1


def _can_pass_through(image: Image.Image, orientation: int, max_side: int) -> bool:
    return (
        image.format == "JPEG"  # not MPO: its appended frames would bloat the record
        and image.mode == "RGB"
        and orientation == 1
        and (not max_side or max(image.size) <= max_side)
    )


def jpeg_structure_problem(data: bytes) -> str | None:
    """What is wrong with a JPEG's marker structure, or None.

    Stored bytes must decode in TensorFlow, which is stricter than Pillow about what follows
    the image data (a segment running past the end fails there); so every segment must fit
    and the end-of-image marker must be reached.
    """
    if not data.startswith(b"\xff\xd8"):
        return "no start-of-image marker"
    pos, size = 2, len(data)
    while True:
        marker = _MARKER.match(data, pos)
        if marker is None:
            return "truncated" if pos >= size else f"damaged marker at byte {pos}"
        code, pos = marker.group(1)[0], marker.end()
        if code == 0xD9:  # end of image
            return None
        if 0xD0 <= code <= 0xD7 or code == 0x01:  # markers without a length
            continue
        length = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 > size or length < 2 or pos + length > size:
            return f"segment at byte {pos - 2} runs past the end of the file"
        pos += length
        if code == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            end = _SCAN_END.search(data, pos)
            if end is None:
                return "truncated image data"
            pos = end.start()


def _validate_fully(image: Image.Image) -> None:
    """Decode the whole entropy-coded stream at the smallest DCT scale: cheap, and complete."""
    image.draft(None, (1, 1))
    try:
        image.load()
    except Exception as exc:  # as above
        raise BadImage(f"truncated or corrupt JPEG data ({first_line(exc, 160)})") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels: transparency composited on white, 16-bit scaled to 8, CMYK converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _sixteen_to_eight(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _sixteen_to_eight(image: Image.Image) -> Image.Image:
    """Scale 16-bit grey (or 32-bit int/float holding 16-bit values) to 8 bits, not clip."""
    import numpy as np  # only these rare images pay for the import

    pixels = np.asarray(image, dtype=np.float64)
    # I;16 is 16-bit by definition; for I and F the values tell.
    peak = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
    return Image.fromarray(np.clip(pixels * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8), "L")
