"""Classification scores from a confusion matrix: accuracy, per-class accuracy (recall), F1 and macro-F1.

Pure functions over integer labels in 0..C-1; every one accepts a leading batch axis, so a bootstrap
scores all of its resamples in one call (`diffgen.metrics.bootstrap`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """(..., C, C) counts: row = true class, column = predicted class, for (..., N) label arrays."""
    truth, predicted = np.asarray(truth, np.int64), np.asarray(predicted, np.int64)
    if truth.shape != predicted.shape:
        raise ValueError(f"truth and predictions differ in shape: {truth.shape} vs {predicted.shape}")
    lead = truth.shape[:-1]
    batches = int(np.prod(lead)) if lead else 1
    flat = (np.arange(batches)[:, None] * classes * classes + (truth * classes + predicted).reshape(batches, -1))
    counts = np.bincount(flat.ravel(), minlength=batches * classes * classes)
    return counts.reshape(*lead, classes, classes)


@dataclass(frozen=True)
class Scores:
    """Scores of one confusion matrix (or a batch of them: every field then has the batch's leading axes)."""

    accuracy: np.ndarray
    class_accuracy: np.ndarray  # (..., C) recall of each class; NaN for a class absent from the truth
    class_f1: np.ndarray  # (..., C) NaN when the class is neither true nor predicted
    macro_f1: np.ndarray  # mean F1 over the classes present in the truth


def scores(matrix: np.ndarray) -> Scores:
    m = np.asarray(matrix, np.float64)
    hits = np.diagonal(m, axis1=-2, axis2=-1)
    true_counts, predicted_counts = m.sum(axis=-1), m.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = hits.sum(axis=-1) / m.sum(axis=(-2, -1))
        class_accuracy = np.where(true_counts > 0, hits / true_counts, np.nan)
        f1 = np.where(true_counts + predicted_counts > 0, 2 * hits / (true_counts + predicted_counts), np.nan)
        present = true_counts > 0
        macro = np.where(present, np.nan_to_num(f1), 0.0).sum(axis=-1) / present.sum(axis=-1)
    return Scores(accuracy, class_accuracy, f1, macro)
