"""What anyone looks at before asking "why": the test confusion matrix, accuracy per class, the
most-confused pairs and their images, and the groups where a data set has them (issue 24)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Evaluation:
    """The final model on the test split.

    Attributes:
        confusion: ``(M, M)`` counts, row = true class, column = predicted.
        per_class: ``(M,)`` accuracy per true class (NaN for a class with no test image).
        confused: the most-confused ordered pairs ``(true, predicted, count)``, largest first.
        examples: per confused pair, up to a few test positions of such mistakes.
    """

    confusion: np.ndarray
    per_class: np.ndarray
    confused: list[tuple[int, int, int]]
    examples: list[list[int]]


def evaluate_predictions(pred: np.ndarray, y: np.ndarray, num_classes: int, top: int = 6, per_pair: int = 4) -> Evaluation:
    """The confusion matrix and what follows from it.

    Args:
        pred / y: ``(N,)`` predicted and true classes of the test images.
    """
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    totals = confusion.sum(1)
    per_class = np.where(totals > 0, np.diag(confusion) / np.maximum(totals, 1), np.nan)
    off = [(int(a), int(b), int(confusion[a, b])) for a in range(num_classes) for b in range(num_classes) if a != b and confusion[a, b]]
    confused = sorted(off, key=lambda t: (-t[2], t[0], t[1]))[:top]
    examples = [np.flatnonzero((y == a) & (pred == b))[:per_pair].tolist() for a, b, _ in confused]
    return Evaluation(confusion, per_class, confused, examples)


def evaluation_metrics(ev: Evaluation, classes: tuple[str, ...] | list[str]) -> dict[str, float]:
    """``class_accuracy/<class>`` per class with test images."""
    return {f"class_accuracy/{metric_name(name)}": float(acc) for name, acc in zip(classes, ev.per_class, strict=True) if not np.isnan(acc)}


def metric_name(name: str) -> str:
    """A class or group name as part of an MLflow metric name (letters, digits, ``_ - . / :``
    and spaces; anything else becomes ``_``), cut to 100 characters. A path segment MLflow
    would resolve (``..``, ``.``, an empty one: a group named ``../up``) becomes ``_``: MLflow
    refuses a metric name that resolves to another."""
    safe = re.sub(r"[^\w\-./: ]", "_", name)
    return "/".join("_" if part.strip() in ("", ".", "..") else part for part in safe.split("/"))[:100]
