"""common.model and the trainer's --weights: the model the evaluator rebuilds, weight files,
and the ImageNet download failing loudly instead of falling back to random weights."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.trainer_testdata import (
    QUICK,
    REPO,
    error_lines,
    free_port,
    run_trainer,
    val_jpegs,
    write_dataset,
)

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from common import model  # noqa: E402

# Keras 3.15 calls np.array(tensor) with NumPy 2's copy keyword unsupported: harmless, noisy.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def _images(n: int = 4, size: int = 75, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


def test_logits_are_float32_and_sized_by_the_classes_even_under_mixed_precision() -> None:
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        net = model.build_classifier(5, 75)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert net.input_shape == (None, 75, 75, 3)
    assert net.output_shape == (None, 5)
    logits = net(_images(2), training=False)
    assert logits.dtype == tf.float32
    assert model.backbone_of(net).compute_dtype == "float16"


def _save_legacy_h5(backbone: keras.Model, path: str) -> None:
    """The HDF5 layout of Keras' own ImageNet file (..._notop.h5), which Keras 3 still reads."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, backbone)


@pytest.mark.parametrize("name", ["backbone.weights.h5", "backbone_notop.h5"])
def test_backbone_weights_file_round_trip(tmp_path, name: str) -> None:  # noqa: ANN001
    """Weights saved from one backbone load into a new classifier: the same features."""
    source = model.build_classifier(3, 75)
    path = str(tmp_path / name)
    if name.endswith(".weights.h5"):
        model.backbone_of(source).save_weights(path)
    else:
        _save_legacy_h5(model.backbone_of(source), path)

    loaded = model.build_classifier(3, 75, weights=path)
    fresh = model.build_classifier(3, 75)
    x = _images()
    expected = model.backbone_of(source)(x, training=False).numpy()
    np.testing.assert_allclose(model.backbone_of(loaded)(x, training=False), expected, rtol=1e-5)
    assert not np.allclose(model.backbone_of(fresh)(x, training=False), expected)


def test_imagenet_weights_without_internet_is_one_clear_error(tmp_path) -> None:  # noqa: ANN001
    """No silent switch to random weights, no hang: exit 2 with one sentence."""
    data = str(tmp_path / "data")
    write_dataset(data, train_per_class=2, val_per_class=1)
    nowhere = f"http://127.0.0.1:{free_port()}"  # a closed port: every connection refused
    env = {
        **os.environ,
        "KERAS_HOME": str(tmp_path / "keras"),  # an empty cache
        "https_proxy": nowhere,
        "HTTPS_PROXY": nowhere,
        "no_proxy": "",
        "NO_PROXY": "",
    }
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "--data", data, "--run-dir", str(tmp_path / "run"),
         "--weights", "imagenet"],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: cannot download Keras' ImageNet weights")
    assert "python -m trainer weights --out URI" in line and "--weights URI" in line
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_a_mixed_precision_run_exports_a_float32_model(tmp_path) -> None:  # noqa: ANN001
    """Mixed float16 (the GPU default) trains with loss scaling; the export serves in float32.
    The batch is larger than the dataset: a warning, and the data repeats."""
    data, run_dir = str(tmp_path / "data"), str(tmp_path / "run")
    write_dataset(data, train_per_class=2, val_per_class=1)
    result = run_trainer(
        data, run_dir, *QUICK, "--precision", "mixed", "--fine-tune", "head",
        "--batch-size", "8", "--steps", "2", "--log-every", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "batch size 8 is larger than the 6 training examples" in result.stderr
    assert "mixed float16 on CPU" in result.stderr
    assert "step 2, loss" in result.stderr

    serve = tf.saved_model.load(os.path.join(run_dir, "export")).signatures["serving_default"]
    # The model's ops live in the graph's function library (a mixed export would cast to half).
    assert "DT_HALF" not in str(serve.graph.as_graph_def().library)
    out = serve(image_bytes=tf.constant([jpeg for _, jpeg in val_jpegs(per_class=1)]))
    assert out["probabilities"].dtype == tf.float32
    assert out["probabilities"].shape == (3, 3)
