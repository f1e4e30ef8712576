"""TensorBoard events: scalars and input images under run-dir/train, HParams at run-dir/.

The HParams record sits at the run directory's root, a parent of both `train/` and the
evaluator's `eval/`, because TensorBoard's HParams tab takes a session's metrics from the
event directories under the one holding its record: so the tab shows each run's training
loss and evaluation accuracy next to its hyperparameters.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from common import layout
from trainer.config import hparam_names

MAX_IMAGES = 3


class TrainSummaries:
    def __init__(self, run_dir: str, *, write: bool = True) -> None:
        """write=False (a worker other than the chief): the same calls, nothing written."""
        self.writer = (
            tf.summary.create_file_writer(layout.RunDir(run_dir).train_dir)
            if write
            else tf.summary.create_noop_writer()
        )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with self.writer.as_default(step=step):
            for tag, value in values.items():
                tf.summary.scalar(tag, value)

    def images(self, step: int, images: tf.Tensor) -> None:
        """A few augmented training inputs ([-1, 1] floats), as the model sees them."""
        with self.writer.as_default(step=step):
            tf.summary.image("inputs", (images[:MAX_IMAGES] + 1.0) / 2.0, max_outputs=MAX_IMAGES)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def hparams_record(hparams: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """What the HParams tab shows and filters on: the hyperparameters, nothing else.

    hparams.json also holds bookkeeping (creation time, format, example counts); as filters in
    TensorBoard those are noise (a timestamp per run), so only TrainConfig's hparams go in.
    Scalars only: TensorBoard has no list or null values.
    """
    values: dict[str, bool | int | float | str] = {}
    for name in hparam_names():
        value = hparams.get(name)
        if isinstance(value, (bool, int, float, str)):
            values[name] = value
        elif value is None:
            values[name] = "none"
    return values


def write_hparams(run_dir: str, run_name: str, hparams: dict[str, Any]) -> None:
    """The run's HParams record, at the run dir's root (see the module docstring)."""
    writer = tf.summary.create_file_writer(run_dir)
    with writer.as_default():
        hp.hparams(hparams_record(hparams), trial_id=run_name)
    writer.close()
