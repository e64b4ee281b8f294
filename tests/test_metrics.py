"""Metrics against hand-computed values."""

import numpy as np
import pytest

from mnist_lab.errors import UserError
from mnist_lab.metrics import METRICS, Classification, Confused, classify, metric, most_confused


def test_confusion_and_pairs():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2, 9, 9, 9])
    y_pred = np.array([0, 1, 1, 1, 2, 2, 0, 4, 4, 9])
    m = classify(y_true, y_pred)
    cm = np.array(m.confusion_matrix)
    assert cm.shape == (10, 10)  # every class, even those absent from both arrays
    assert cm[0, 1] == 1 and cm[9, 4] == 2 and cm.sum() == 10
    assert m.accuracy == pytest.approx(0.6)
    assert m.most_confused[0] == Confused(true=9, pred=4, count=2)
    assert most_confused(cm) == m.most_confused
    assert m.precision[1] == pytest.approx(2 / 3) and m.recall[2] == pytest.approx(2 / 3)
    assert m.f1[9] == pytest.approx(0.5)  # precision 1, recall 1/3
    assert m.precision[3] == m.recall[3] == m.f1[3] == 0  # no samples, no predictions: 0


def test_matches_scikit_learn():
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 10, 500), rng.integers(0, 10, 500)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="macro")
    m = classify(y_true, y_pred)
    assert (m.macro_precision, m.macro_recall, m.macro_f1) == pytest.approx((p, r, f))


def test_classification_round_trips_through_json():
    m = classify(np.array([0, 1, 2, 2, 3]), np.array([0, 2, 2, 1, 3]))
    d = m.to_dict()
    cells = {(c["true"], c["pred"], c["count"]) for c in d["most_confused"]}
    assert cells == {(1, 2, 1), (2, 1, 1)}  # plain JSON, not Confused objects
    assert Classification.from_dict(d) == m


def test_metric_registry():
    assert metric("test_accuracy").format(0.99444) == "99.44%"
    assert metric("test_loss").format(0.02741) == "0.0274"
    assert metric("params").format(7432) == "7,432" and metric("wall_seconds").format(None) == "—"
    assert not metric("test_loss").higher_is_better and metric("macro_f1").higher_is_better
    assert "test_acc" not in METRICS  # one vocabulary: the old short names are gone
    with pytest.raises(UserError, match="unknown metric 'test_acc'"):
        metric("test_acc")
