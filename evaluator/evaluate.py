"""Scoring one checkpoint on the whole validation split (TensorFlow, CPU only)."""

from __future__ import annotations

import dataclasses
import logging

import tensorflow as tf

from common import data as common_data
from common import manifest as manifest_mod
from common.cli import UserError, first_line
from common.layout import Checkpoint, RunDir
from common.model import build_classifier
from common.validation import score_split

log = logging.getLogger("evaluator")


class CheckpointUnreadable(Exception):
    """The checkpoint is missing, half-written or corrupt right now; try again later."""


@dataclasses.dataclass
class RunSetup:
    """What a run needs to be evaluated: its data, labels and model shape (from hparams)."""

    data_uri: str
    manifest: manifest_mod.Manifest
    image_size: int
    hparams: dict

    @classmethod
    def of(cls, run: RunDir) -> RunSetup:
        """Raises UserError (unreadable hparams.json or dataset) or KeyError (a missing key)."""
        hparams = run.hparams()
        if not isinstance(hparams, dict):
            raise UserError(f"{run.hparams_uri} is missing or not a JSON object.")
        data_uri = hparams["data"]
        manifest = manifest_mod.load(data_uri)
        manifest_mod.check_shard_sizes(data_uri, manifest, ["validation"])
        return cls(data_uri, manifest, int(hparams["image_size"]), hparams)

    @property
    def key(self) -> tuple[str, int]:
        return (self.data_uri, self.image_size)


class Evaluator:
    """Keeps one model and one input pipeline per (dataset, image size) for all runs."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._models: dict[tuple[int, int], tuple[tf.keras.Model, object]] = {}
        self._datasets: dict[tuple[str, int], tf.data.Dataset] = {}

    def model_for(self, setup: RunSetup) -> tuple[tf.keras.Model, object]:
        key = (setup.manifest.num_classes, setup.image_size)
        if key not in self._models:
            model = build_classifier(setup.manifest.num_classes, setup.image_size, weights=None)
            predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
            self._models[key] = (model, predict)
        return self._models[key]

    def dataset_for(self, setup: RunSetup) -> tf.data.Dataset:
        if setup.key not in self._datasets:
            self._datasets[setup.key] = common_data.eval_dataset(
                setup.data_uri, setup.manifest, "validation", setup.image_size, self.batch_size
            )
        return self._datasets[setup.key]

    def restore(self, setup: RunSetup, checkpoint: Checkpoint) -> tf.keras.Model:
        model, _ = self.model_for(setup)
        try:
            tf.train.Checkpoint(model=model).read(checkpoint.prefix).expect_partial()
        except Exception as exc:  # a damaged file surfaces as many types, IndexError included
            raise CheckpointUnreadable(f"{type(exc).__name__}: {first_line(exc)}") from exc
        return model

    def score(self, setup: RunSetup, checkpoint: Checkpoint) -> tuple[dict, list[list[int]]]:
        """Scores over every validation example exactly once, and the confusion matrix."""
        self.restore(setup, checkpoint)
        _, predict = self.model_for(setup)
        return score_split(predict, self.dataset_for(setup), setup.data_uri, setup.manifest)
