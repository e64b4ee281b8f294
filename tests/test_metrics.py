"""Metrics against hand-computed values."""

import numpy as np
import pytest

from mnist_lab.metrics import classification_metrics, confusion_matrix


def test_confusion_and_pairs():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2, 9, 9, 9])
    y_pred = np.array([0, 1, 1, 1, 2, 2, 0, 4, 4, 9])
    cm = confusion_matrix(y_true, y_pred)
    assert cm[0, 1] == 1 and cm[9, 4] == 2 and cm.sum() == 10
    m = classification_metrics(y_true, y_pred)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["most_confused"][0] == {"true": 9, "pred": 4, "count": 2}
    assert m["precision"][1] == pytest.approx(2 / 3) and m["recall"][2] == pytest.approx(2 / 3)
    assert m["f1"][9] == pytest.approx(0.5)  # precision 1, recall 1/3


def test_matches_scikit_learn():
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 10, 500), rng.integers(0, 10, 500)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="macro")
    m = classification_metrics(y_true, y_pred)
    assert (m["macro_precision"], m["macro_recall"], m["macro_f1"]) == pytest.approx((p, r, f))
