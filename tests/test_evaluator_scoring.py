"""Scores are exact counts over the split, however it is cut into batches."""

import math

import numpy as np
import pytest

from common.scoring import Scorer

LABELS = ["ant", "bee", "cat", "dog", "eel", "fox"]


def _scores(logits, labels, batch):
    scorer = Scorer(len(LABELS))
    for i in range(0, len(labels), batch):
        scorer.add(logits[i : i + batch], labels[i : i + batch])
    return scorer


def test_batching_does_not_change_scores_and_counts_each_example_once():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(103, len(LABELS)))
    labels = rng.integers(0, len(LABELS), size=103)
    whole = _scores(logits, labels, 103).result(LABELS)
    for batch in (1, 7, 32):
        scorer = _scores(logits, labels, batch)
        assert scorer.count == 103
        assert scorer.confusion.sum() == 103
        result = scorer.result(LABELS)
        assert result["top1"] == pytest.approx(whole["top1"])
        assert result["top5"] == pytest.approx(whole["top5"])
        assert result["loss"] == pytest.approx(whole["loss"])


def test_scores_match_a_direct_computation():
    logits = np.array([[5.0, 1, 0, 0, 0, 0], [0, 0, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6]])
    labels = np.array([0, 3, 0])
    result = _scores(logits, labels, 2).result(LABELS)
    assert result["top1"] == pytest.approx(1 / 3)
    # label 0 is 6th of 6 in the third row: not in its top 5
    assert result["top5"] == pytest.approx(2 / 3)
    expected_loss = np.mean(
        [-(row[y] - math.log(np.exp(row).sum())) for row, y in zip(logits, labels, strict=True)]
    )
    assert result["loss"] == pytest.approx(expected_loss)
    assert result["per_class"]["ant"] == {"precision": 1.0, "recall": 0.5, "examples": 2}
    assert result["per_class"]["dog"]["recall"] == 0.0
    assert result["per_class"]["cat"]["precision"] == 0.0  # predicted once, wrongly
    assert result["per_class"]["bee"]["precision"] is None  # never predicted


def test_top5_is_absent_with_fewer_than_five_classes():
    scorer = Scorer(3)
    scorer.add(np.eye(3), np.array([0, 1, 2]))
    result = scorer.result(["a", "b", "c"])
    assert result["top1"] == 1.0
    assert result["top5"] is None


def test_no_examples_is_an_error_not_a_zero():
    with pytest.raises(ValueError):
        Scorer(3).result(["a", "b", "c"])
