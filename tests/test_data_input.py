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
    assert images.shape == (30, 75, 75, 3)
    assert set(labels.numpy().tolist()) == {0, 1, 2}
    assert float(tf.reduce_min(images)) >= -1.0 and float(tf.reduce_max(images)) <= 1.0


def test_each_image_of_a_batch_gets_its_own_flip_and_colours() -> None:
    ramp = np.tile(np.linspace(40, 215, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    ramp[..., 0] = 200  # some colour to distort
    batch = tf.constant(np.stack([ramp] * 64))
    out = data.augment_batch(batch).numpy()
    assert out.shape == (64, 32, 32, 3)
    assert out.min() >= -1.0 and out.max() <= 1.0
    # The ramp rises left to right; flipped copies fall.
    rising = out[:, :, -1].mean(axis=(1, 2)) > out[:, :, 0].mean(axis=(1, 2))
    assert 10 < rising.sum() < 54
    mean_colours = out.mean(axis=(1, 2))
    assert len(np.unique(np.round(mean_colours, 3), axis=0)) == 64


def _encoded(image: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    return out.getvalue()


def test_eval_preprocessing_reads_png_like_jpeg_and_takes_the_central_crop() -> None:
    yy, xx = np.mgrid[0:120, 0:160]
    image = np.stack([xx * 1.5, yy * 2.0, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    image[:8], image[-8:], image[:, :10], image[:, -10:] = 255, 255, 255, 255  # a white border
    jpeg = data.preprocess_for_eval(tf.constant(_encoded(image, "JPEG")), 64).numpy()
    png = data.preprocess_for_eval(tf.constant(_encoded(image, "PNG")), 64).numpy()
    assert jpeg.shape == png.shape == (64, 64, 3)
    assert np.abs(jpeg - png).mean() < 0.02
    # The 0.875 central crop cuts the 6.25%-wide border away (bilinear edges aside).
    assert png[2:-2, 2:-2].max() < 0.99
