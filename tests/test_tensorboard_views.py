"""What a person sees in TensorBoard: a confusion matrix that names its classes (the most
confused pairs when there are too many for a grid), and HParams filters that are hyperparameters."""

from __future__ import annotations

import numpy as np

from evaluator.confusion import GRID_MAX, confusion_image, most_confused


def test_most_confused_pairs_are_exact_and_ordered() -> None:
    labels = ["cat", "dog", "fox"]
    confusion = np.array([[5, 3, 0], [1, 8, 1], [0, 3, 2]])
    assert most_confused(confusion, labels) == [
        ("fox", "dog", 3, 0.6),  # same count as cat -> dog, a larger share of its class
        ("cat", "dog", 3, 0.375),  # 3 of cat's 8 examples
        ("dog", "cat", 1, 0.1),
        ("dog", "fox", 1, 0.1),
    ]
    assert most_confused(np.diag([3, 4, 5]), labels) == []  # nothing confused


def test_grid_for_few_classes_pairs_for_many() -> None:
    few = [f"class-{i}" for i in range(GRID_MAX)]
    grid = confusion_image(np.eye(GRID_MAX, dtype=int) * 3, few)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    assert grid.shape[0] > 24 * GRID_MAX  # one row per class, below the column names
    many = [f"class-{i}" for i in range(GRID_MAX + 1)]
    listing = confusion_image(np.eye(GRID_MAX + 1, dtype=int) * 3, many)
    assert listing.shape[0] < 24 * GRID_MAX  # a short list, not a grid
    # The class names are drawn: a wider name makes a wider picture.
    longer = confusion_image(np.eye(3, dtype=int), ["a", "b", "a-very-long-class-name"])
    assert longer.shape[1] > confusion_image(np.eye(3, dtype=int), ["a", "b", "c"]).shape[1]


def test_hparams_record_holds_hyperparameters_only() -> None:
    from trainer.summaries import hparams_record

    saved = {"lr": 0.01, "batch_size": 16, "epochs": None, "created": "2026-11-29T21:00:00+00:00",
             "format": "inception-finetune-run/1", "train_examples": 120, "labels": ["a", "b"],
             "changes": []}  # fmt: skip
    record = hparams_record(saved)
    assert record["lr"] == 0.01 and record["batch_size"] == 16 and record["epochs"] == "none"
    assert not {"created", "format", "train_examples", "labels", "changes"} & set(record)
