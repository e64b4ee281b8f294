"""Calibration measures on synthetic cases with known answers, and temperature scaling on a
real short run (fitted on its validation hold-out)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax

from mnist_lab.robust.calibration import calibrate, fit_temperature, reliability


def _sampled(n: int = 20_000, sharpness: float = 3.0, seed: int = 0):
    """Log-probabilities and labels drawn from those very probabilities: calibrated."""
    rng = np.random.default_rng(seed)
    log_p = log_softmax(sharpness * rng.normal(size=(n, 10)), axis=1)
    u = rng.random(n)[:, None]
    labels = (np.exp(log_p).cumsum(1) < u).sum(1).clip(0, 9)
    return log_p, labels


def test_a_calibrated_model_has_ece_near_zero_and_temperature_near_one():
    log_p, y = _sampled()
    c = calibrate(log_p, y, log_p, y)
    assert c.ece < 0.015
    assert c.temperature == pytest.approx(1.0, abs=0.05)


def test_an_overconfident_model_has_a_large_ece_that_temperature_scaling_removes():
    log_p, y = _sampled()
    val, test = slice(0, 10_000), slice(10_000, None)
    c = calibrate(4 * log_p[test], y[test], 4 * log_p[val], y[val])  # logits 4x too sharp
    assert c.ece > 0.2
    assert c.temperature == pytest.approx(4.0, rel=0.1)
    assert c.ece_scaled < 0.02 and c.nll_scaled < c.nll


def test_reliability_bins_count_every_prediction_once():
    log_p, y = _sampled(1000)
    rel = reliability(np.exp(log_p), y)
    assert sum(rel.counts) == 1000 and len(rel.edges) == 16
    certain = np.eye(10)[[0, 1]]  # confidence exactly 1 falls in the last bin
    assert reliability(certain, np.array([0, 1])).counts[-1] == 2


def test_without_a_hold_out_there_is_no_temperature():
    log_p, y = _sampled(500)
    c = calibrate(log_p, y)
    assert c.temperature is None and c.ece_scaled is None and c.ece >= 0


def test_temperature_scaling_lowers_validation_nll_on_a_real_run(suite_runs):
    from mnist_lab.data import holdout
    from mnist_lab.suites import subject

    s = subject(suite_runs.val_run)
    cfg = s.record.config
    val = holdout(s.data.train, cfg.val_size, cfg.seed)[1]
    log_p, y = s.log_probs(val.images.numpy()), val.labels.numpy()
    t = fit_temperature(log_p, y)

    def nll(temperature: float) -> float:
        return -float(log_softmax(log_p / temperature, axis=1)[np.arange(len(y)), y].mean())
    assert t != pytest.approx(1.0, abs=1e-3)
    assert nll(t) < nll(1.0)
