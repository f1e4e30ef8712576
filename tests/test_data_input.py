"""common.data: what the model is fed in training and evaluation."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from common import manifest as manifest_lib
from tests.trainer_testdata import write_dataset

tf = pytest.importorskip("tensorflow")

from common import data  # noqa: E402


@pytest.fixture(scope="module")
def classic(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, manifest_lib.Manifest]:
    """A dataset with the classic tool's 1-based labels (label_offset 1)."""
    uri = str(tmp_path_factory.mktemp("input") / "data")
    write_dataset(uri, train_per_class=4, val_per_class=8, label_offset=1)
    return uri, manifest_lib.load(uri)


def test_eval_dataset_yields_every_example_once_with_0_based_labels(classic) -> None:  # noqa: ANN001
    uri, manifest = classic
    batches = list(data.eval_dataset(uri, manifest, "validation", 80, batch_size=10))
    assert [len(labels) for _, labels in batches] == [10, 10, 4]  # the partial batch is kept
    labels = np.concatenate([labels.numpy() for _, labels in batches])
    assert Counter(labels.tolist()) == {0: 8, 1: 8, 2: 8}
    images = np.concatenate([images.numpy() for images, _ in batches])
    assert images.shape == (24, 80, 80, 3) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0


def test_a_batch_larger_than_the_dataset_repeats_the_data(classic) -> None:  # noqa: ANN001
    uri, manifest = classic
    assert manifest.count("train") == 12
    images, labels = next(iter(data.train_dataset(uri, manifest, 75, batch_size=30)))
    assert images.shape == (30, 75, 75, 3) and images.dtype == tf.uint8
    assert set(labels.numpy().tolist()) == {0, 1, 2}


def test_random_crops_are_flipped_about_half_the_time() -> None:
    ramp = np.tile(np.linspace(0, 255, 160)[None, :, None], (120, 1, 3)).astype(np.uint8)
    jpeg = tf.constant(_encoded(ramp, "JPEG"))
    crops = np.stack([data.random_crop(jpeg, 40).numpy() for _ in range(60)]).astype(float)
    assert crops.shape == (60, 40, 40, 3)
    rising = crops[:, :, -1].mean(axis=(1, 2)) > crops[:, :, 0].mean(axis=(1, 2))
    assert 12 < rising.sum() < 48


def test_augment_batch_jitters_each_image_on_its_own_and_keeps_greys_grey() -> None:
    rng = np.random.default_rng(0)
    orange = np.clip(rng.normal((220, 120, 40), 10, (32, 32, 3)), 0, 255)
    grey = np.clip(rng.normal(128, 10, (32, 32, 3)), 0, 255)
    batch = tf.constant(np.stack([orange] * 32 + [grey] * 32).astype(np.uint8))
    out = data.augment_batch(batch).numpy()
    assert out.dtype == np.float32 and out.shape == (64, 32, 32, 3)
    assert out.min() >= -1.0 and out.max() <= 1.0
    means = out.mean(axis=(1, 2))
    assert len(np.unique(np.round(means[:32], 4), axis=0)) == 32  # a draw per image
    hues = np.argmax(means[:32], axis=1)
    assert set(hues.tolist()) >= {0, 1}  # hue shifts turn some orange red-most, some green-most
    # Saturation and hue act on colour only: a grey stays grey (channels within noise).
    assert np.abs(means[32:] - means[32:].mean(axis=1, keepdims=True)).max() < 0.05


def _encoded(image: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    return out.getvalue()


def test_eval_preprocessing_reads_png_like_jpeg_and_keeps_the_whole_image() -> None:
    yy, xx = np.mgrid[0:120, 0:160]
    image = np.stack([xx * 1.5, yy * 2.0, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    image[:8], image[-8:], image[:, :10], image[:, -10:] = 255, 255, 255, 255  # a white border
    jpeg = data.preprocess_for_eval(tf.constant(_encoded(image, "JPEG")), 64).numpy()
    png = data.preprocess_for_eval(tf.constant(_encoded(image, "PNG")), 64).numpy()
    assert jpeg.shape == png.shape == (64, 64, 3)
    assert np.abs(jpeg - png).mean() < 0.02
    # The whole image is resized: its white border is still there, all round.
    for edge in (png[0], png[-1], png[:, 0], png[:, -1]):
        assert edge.min() > 0.95
