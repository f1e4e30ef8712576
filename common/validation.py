"""One pass over a dataset's validation split with a model: the scores a result records.

The evaluator scores every checkpoint this way on CPU, and a trainer its rung checkpoints on
its own device (common.early_stop), so that a result means the same whoever made it: every
validation example exactly once, resized whole (common.data.eval_dataset), exact counts
(common.scoring).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from common import data
from common.cli import UserError
from common.manifest import Manifest
from common.scoring import Scorer


def score_split(
    predict: Callable[[tf.Tensor], tf.Tensor],
    batches: tf.data.Dataset,
    data_uri: str,
    manifest: Manifest,
) -> tuple[dict, list[list[int]]]:
    """Scores over the validation split and its confusion matrix; `seconds` and
    `examples_per_sec` say what the pass cost.

    Raises UserError for a damaged shard, or when the split no longer has the examples that
    dataset.json lists (the dataset changed under the run).
    """
    scorer = Scorer(manifest.num_classes)
    start = time.monotonic()
    try:
        for images, labels in batches:
            logits = predict(images)
            scorer.add(np.asarray(logits, dtype=np.float64), labels.numpy())
    except tf.errors.DataLossError as exc:
        raise data.damaged_shard_error(data_uri, manifest, "validation", exc) from exc
    seconds = time.monotonic() - start
    expected = manifest.count("validation")
    if scorer.count != expected:
        raise UserError(
            f"scored {scorer.count} validation examples but dataset.json lists {expected}; "
            f"the dataset at {data_uri} changed under the run."
        )
    result = scorer.result(manifest.labels)
    result["seconds"] = round(seconds, 3)
    result["examples_per_sec"] = round(scorer.count / seconds, 1) if seconds else None
    return result, scorer.confusion.tolist()
