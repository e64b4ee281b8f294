"""Classification metrics from predictions: per-class P/R/F1, confusion matrix, confused pairs."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """Counts [true, predicted]."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(
        n_classes, n_classes)


def most_confused(cm: np.ndarray, k: int = 5) -> list[dict]:
    """The k largest off-diagonal cells: {'true', 'pred', 'count'}, largest first."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:k]
    pairs = [np.unravel_index(i, cm.shape) for i in order]
    return [{"true": int(t), "pred": int(p), "count": int(cm[t, p])}
            for t, p in pairs if cm[t, p] > 0]


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 10) -> dict:
    """Accuracy, per-class precision/recall/F1 and their macro averages, confusion matrix."""
    cm = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), n_classes)
    tp = np.diag(cm).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(tp / cm.sum(axis=0))
        recall = np.nan_to_num(tp / cm.sum(axis=1))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return {
        "accuracy": float(tp.sum() / cm.sum()),
        "precision": precision.round(6).tolist(),
        "recall": recall.round(6).tolist(),
        "f1": f1.round(6).tolist(),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "confusion_matrix": cm.tolist(),
        "most_confused": most_confused(cm),
    }
