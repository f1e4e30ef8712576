"""`python -m evaluator predict`: top-k labels of an exported model for image files."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from common import storage
from common.cli import UserError, first_line
from common.export import SIGNATURE, is_complete_export
from common.images import BadImage, to_stored_jpeg

# The export resizes anyway; capping the side first keeps huge photos cheap to send.
_MAX_SIDE = 1024


def load_model(model_uri: str):  # noqa: ANN201 - a loaded SavedModel signature
    if not storage.exists(storage.join(model_uri, "saved_model.pb")):
        raise UserError(f"no SavedModel at {model_uri} (saved_model.pb not found).")
    if not is_complete_export(model_uri):
        raise UserError(
            f"the export at {model_uri} is incomplete (its writer was stopped mid-way); use "
            "another version, or export again."
        )
    try:
        return tf.saved_model.load(model_uri).signatures[SIGNATURE]
    except (OSError, ValueError, KeyError, tf.errors.OpError) as exc:
        raise UserError(f"cannot load the export at {model_uri}: {first_line(exc)}") from exc


def image_bytes(path: str) -> bytes:
    """Any image preprocess accepts, as the RGB JPEG the model's signature takes."""
    try:
        data = storage.read_bytes(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    try:
        return to_stored_jpeg(data, _MAX_SIDE).jpeg
    except BadImage as exc:
        raise UserError(f"{path}: {exc}.") from exc


def predict(model_uri: str, paths: list[str], top_k: int) -> list[list[tuple[str, float]]]:
    """For each image, the top_k (label, probability) pairs, most likely first."""
    batch = [image_bytes(p) for p in paths]  # every file checked before the model loads
    signature = load_model(model_uri)
    outputs = signature(image_bytes=tf.constant(batch))
    probabilities = outputs["probabilities"].numpy()
    labels = outputs["labels"].numpy()
    results = []
    for row_probs, row_labels in zip(probabilities, labels, strict=True):
        order = np.argsort(-row_probs)[:top_k]
        results.append([(row_labels[i].decode("utf-8"), float(row_probs[i])) for i in order])
    return results
