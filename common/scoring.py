"""Classification scores accumulated batch by batch, in NumPy.

Every example of the split is added exactly once; the scores are exact counts over the whole
split, not averages of per-batch averages.
"""

from __future__ import annotations

import numpy as np


class Scorer:
    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)  # [true, predicted]
        self.top5_correct = 0
        self.loss_sum = 0.0
        self.count = 0

    def add(self, logits: np.ndarray, labels: np.ndarray) -> None:
        """Add one batch: logits [N, C] (float), labels [N] (0-based class ids)."""
        logits = np.asarray(logits, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size == 0:
            return
        predicted = logits.argmax(axis=1)
        np.add.at(self.confusion, (labels, predicted), 1)
        k = min(5, self.num_classes)
        top_k = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        self.top5_correct += int((top_k == labels[:, None]).any(axis=1).sum())
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self.loss_sum += float(-log_probs[np.arange(labels.size), labels].sum())
        self.count += int(labels.size)

    def result(self, labels: list[str]) -> dict:
        """top1, top5 (None with fewer than 5 classes), mean loss, per-class precision/recall."""
        if self.count == 0:
            raise ValueError("no examples were scored")
        correct = np.diag(self.confusion)
        true_totals = self.confusion.sum(axis=1)
        predicted_totals = self.confusion.sum(axis=0)
        per_class = {
            label: {
                "precision": _ratio(correct[i], predicted_totals[i]),
                "recall": _ratio(correct[i], true_totals[i]),
                "examples": int(true_totals[i]),
            }
            for i, label in enumerate(labels)
        }
        return {
            "examples": self.count,
            "top1": float(correct.sum()) / self.count,
            "top5": self.top5_correct / self.count if self.num_classes >= 5 else None,
            "loss": self.loss_sum / self.count,
            "per_class": per_class,
        }


def _ratio(numerator: int, denominator: int) -> float | None:
    return float(numerator) / float(denominator) if denominator else None
