"""What preprocess makes of each kind of image file: an RGB JPEG TensorFlow decodes as stated."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from common.images import BadImage, to_stored_jpeg
from tests import imagefiles

tf = pytest.importorskip("tensorflow")

RED, GREEN, BLUE, YELLOW = imagefiles.QUADRANTS
WHITE = (255, 255, 255)


def decode(jpeg: bytes) -> np.ndarray:
    """TensorFlow's own decode, as the trainer will do it."""
    return tf.io.decode_jpeg(jpeg).numpy()


def corners(pixels: np.ndarray) -> list[tuple[int, int, int]]:
    """Colours a few pixels in from each corner: TL, TR, BL, BR."""
    h, w = pixels.shape[:2]
    dy, dx = max(1, h // 6), max(1, w // 6)
    return [
        tuple(int(v) for v in pixels[y, x])
        for y, x in ((dy, dx), (dy, w - dx), (h - dy, dx), (h - dy, w - dx))
    ]


def assert_close(actual: list, expected: list, tolerance: int = 14) -> None:
    for got, want in zip(actual, expected, strict=True):
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= tolerance, (
            actual,
            expected,
        )


@pytest.mark.parametrize("kind", sorted(imagefiles.KINDS))
def test_every_kind_becomes_an_rgb_jpeg_of_the_stated_size(kind: str) -> None:
    make, _ext = imagefiles.KINDS[kind]
    stored = to_stored_jpeg(make(), max_side=500)

    pixels = decode(stored.jpeg)
    assert pixels.shape == (stored.height, stored.width, 3) == (48, 64, 3)
    assert Image.open(io.BytesIO(stored.jpeg)).format == "JPEG"
    if kind in ("jpeg_gray", "png_gray", "png_gray16"):
        tops = corners(pixels)
        assert all(r == g == b for r, g, b in tops)  # grey stays grey, in three channels
    elif kind in ("png_alpha", "webp_alpha", "png_palette_transparent"):
        pass  # checked below
    else:
        assert_close(corners(pixels), [RED, GREEN, BLUE, YELLOW], tolerance=16)


def test_transparency_is_composited_on_white() -> None:
    left_transparent = decode(to_stored_jpeg(imagefiles.png_alpha(), 500).jpeg)
    assert_close(corners(left_transparent), [WHITE, GREEN, WHITE, YELLOW])

    half_alpha = decode(to_stored_jpeg(imagefiles.webp_alpha(), 500).jpeg)
    expected = [tuple((c + 255) // 2 for c in colour) for colour in imagefiles.QUADRANTS]
    assert_close(corners(half_alpha), expected)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    for value, expected in ((0x8000, 128), (0xFFFF, 255), (0x0100, 1)):
        pixels = decode(to_stored_jpeg(imagefiles.png_gray16(value=value), 500).jpeg)
        assert abs(int(pixels.mean()) - expected) <= 2, (value, pixels.mean())


@pytest.mark.parametrize(
    ("orientation", "upright_corners"),
    [
        (1, [RED, GREEN, BLUE, YELLOW]),
        (3, [YELLOW, BLUE, GREEN, RED]),  # stored upside down
        (6, [BLUE, RED, YELLOW, GREEN]),  # camera turned clockwise: rotate 90 degrees right
        (8, [GREEN, YELLOW, RED, BLUE]),
        (2, [GREEN, RED, YELLOW, BLUE]),  # mirrored
    ],
)
def test_exif_orientation_is_applied(orientation: int, upright_corners: list) -> None:
    stored = to_stored_jpeg(imagefiles.jpeg_oriented(40, 20, orientation), max_side=500)
    pixels = decode(stored.jpeg)
    turned = orientation in (5, 6, 7, 8)
    assert (stored.width, stored.height) == ((20, 40) if turned else (40, 20))
    assert pixels.shape[:2] == (stored.height, stored.width)
    assert_close(corners(pixels), upright_corners, tolerance=30)
    assert stored.passed_through == (orientation == 1)


def test_huge_images_are_downscaled_to_max_side_keeping_the_aspect() -> None:
    big_jpeg = imagefiles.encode(Image.fromarray(imagefiles.photo(2000, 1500)), "JPEG", quality=90)
    stored = to_stored_jpeg(big_jpeg, max_side=500)
    assert (stored.width, stored.height) == (500, 375)
    assert decode(stored.jpeg).shape == (375, 500, 3)
    assert len(stored.jpeg) < len(big_jpeg) / 4

    wide_png = imagefiles.png(1000, 250)
    stored = to_stored_jpeg(wide_png, max_side=300)
    assert (stored.width, stored.height) == (300, 75)
    assert_close(corners(decode(stored.jpeg)), [RED, GREEN, BLUE, YELLOW], tolerance=20)

    portrait = imagefiles.jpeg_oriented(900, 600, 6)  # stored landscape, shown portrait
    stored = to_stored_jpeg(portrait, max_side=300)
    assert (stored.width, stored.height) == (200, 300)


def test_small_images_are_never_upscaled_and_zero_turns_the_limit_off() -> None:
    stored = to_stored_jpeg(imagefiles.png(120, 90), max_side=500)
    assert (stored.width, stored.height) == (120, 90)

    big = imagefiles.jpeg(1200, 900)
    stored = to_stored_jpeg(big, max_side=0)
    assert (stored.width, stored.height) == (1200, 900)
    assert stored.jpeg == big


def test_a_jpeg_that_is_already_right_is_stored_byte_for_byte() -> None:
    for data in (imagefiles.jpeg(300, 200), imagefiles.jpeg_progressive(300, 200)):
        stored = to_stored_jpeg(data, max_side=500)
        assert stored.passed_through and stored.jpeg == data
        assert (stored.width, stored.height) == (300, 200)
    too_big = imagefiles.jpeg(800, 600)
    assert not to_stored_jpeg(too_big, max_side=500).passed_through
    assert not to_stored_jpeg(imagefiles.jpeg_cmyk(), max_side=500).passed_through


@pytest.mark.parametrize("name", sorted(imagefiles.not_images()))
def test_files_that_are_not_images_are_refused_with_a_reason(name: str) -> None:
    data, word = imagefiles.not_images()[name]
    with pytest.raises(BadImage) as caught:
        to_stored_jpeg(data, max_side=500)
    assert word in str(caught.value).lower()


def _damaged(whole: bytes, rng: np.random.Generator, count: int) -> list[bytes]:
    """Truncations, flipped bytes, hits on marker bytes, and bytes cut out or inserted."""
    markers = [i for i in range(len(whole) - 1) if whole[i] == 0xFF]
    out = []
    for k in range(count):
        data = bytearray(whole)
        kind = k % 4
        if kind == 0:
            data = data[: int(rng.integers(0, len(data)))]
        elif kind == 2 and markers:  # e.g. a stuffed 0xFF00 in JPEG data turned into a marker
            data[markers[int(rng.integers(len(markers)))] + 1] = int(rng.integers(0, 256))
        elif kind in (1, 2):
            for pos in rng.integers(0, len(data), size=int(rng.integers(1, 4))):
                data[pos] = int(rng.integers(0, 256))
        else:
            at = int(rng.integers(0, len(data)))
            if rng.random() < 0.5:
                del data[at : at + int(rng.integers(1, 20))]
            else:
                data[at:at] = rng.bytes(int(rng.integers(1, 20)))
        out.append(bytes(data))
    return out


def test_a_damaged_jpeg_is_never_stored_unless_tensorflow_decodes_it() -> None:
    """Pass-through trusts Pillow's 1/8-scale decode and a marker walk; TensorFlow must agree."""
    rng = np.random.default_rng(7)
    picture = Image.fromarray(imagefiles.photo(160, 120))
    accepted = refused = 0
    for progressive in (False, True):
        for quality in (75, 95):
            whole = imagefiles.encode(picture, "JPEG", quality=quality, progressive=progressive)
            for data in _damaged(whole, rng, 400):
                try:
                    stored = to_stored_jpeg(data, max_side=500)
                except BadImage:
                    refused += 1
                    continue
                accepted += 1
                assert decode(stored.jpeg).shape == (stored.height, stored.width, 3)
    assert refused > 400 and accepted > 400  # both outcomes were exercised


@pytest.mark.parametrize("kind", sorted(imagefiles.KINDS))
def test_a_damaged_file_of_any_kind_is_skipped_or_stored_decodable(kind: str) -> None:
    make, _ext = imagefiles.KINDS[kind]
    rng = np.random.default_rng(11)
    for data in _damaged(make(), rng, 60):
        try:
            stored = to_stored_jpeg(data, max_side=500)
        except BadImage as exc:
            assert str(exc)  # a reason for the user, never a crash
            continue
        assert decode(stored.jpeg).shape == (stored.height, stored.width, 3)
