"""How far a model's probabilities can be trusted: ECE, MCE, NLL, Brier, reliability bins, and
temperature scaling (Guo et al. 2017) fitted on a validation hold-out, never on test.

Everything here works on arrays of log-probabilities (or logits: softmax is shift-invariant, so
the two give the same temperature) and labels, so torch and scikit-learn models are treated
alike and no model is needed once their outputs are computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.metrics import brier_score_loss, log_loss

BINS = 15  # equal-width confidence bins, as in Guo et al. and most reported ECEs


@dataclass(frozen=True)
class Reliability:
    """Per confidence bin: how many predictions fell in it, their mean confidence, accuracy."""

    edges: list[float]  # BINS + 1 bin edges over [0, 1]
    counts: list[int]
    confidence: list[float | None]  # mean top-class probability; None for an empty bin
    accuracy: list[float | None]


@dataclass(frozen=True)
class CalibrationResult:
    """Calibration of one model on the test set, before and after temperature scaling."""

    ece: float  # expected calibration error: bin-weighted |accuracy - confidence|
    mce: float  # maximum calibration error over non-empty bins
    nll: float  # mean negative log-likelihood of the true class
    brier: float  # multi-class Brier score (mean squared error of the probability vector)
    reliability: Reliability
    temperature: float | None  # fitted on validation; None when the run has no hold-out
    ece_scaled: float | None  # the same measures with the temperature applied
    nll_scaled: float | None
    reliability_scaled: Reliability | None


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> Reliability:
    """Bin predictions by their top-class probability (bins closed on the right)."""
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)

    def mean_per_bin(values: np.ndarray) -> list[float | None]:
        sums = np.bincount(which, weights=values.astype(np.float64), minlength=bins)
        return [float(s / c) if c else None for s, c in zip(sums, counts, strict=True)]

    return Reliability(edges.round(6).tolist(), counts.tolist(), mean_per_bin(confidence),
                       mean_per_bin(correct))


def calibration_errors(rel: Reliability) -> tuple[float, float]:
    """(ECE, MCE) of a reliability table."""
    total = sum(rel.counts)
    gaps = [(n, abs(a - c)) for n, a, c in zip(rel.counts, rel.accuracy, rel.confidence,
                                                strict=True) if n]
    return sum(n * g for n, g in gaps) / total, max(g for _, g in gaps)


def fit_temperature(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(log_probs / T).

    One parameter, so a bounded scalar search over log T is exact enough and needs no
    gradients; the range 0.05-20 holds every temperature a classifier plausibly needs.
    """
    def nll(log_t: float) -> float:
        scaled = log_softmax(log_probs / np.exp(log_t), axis=1)
        return -float(scaled[np.arange(len(labels)), labels].mean())

    found = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(found.x))


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(log_loss(labels, probs, labels=np.arange(probs.shape[1])))


def calibrate(test_log_probs: np.ndarray, test_labels: np.ndarray,
              val_log_probs: np.ndarray | None = None, val_labels: np.ndarray | None = None,
              bins: int = BINS) -> CalibrationResult:
    """Calibration measures on test; with a validation hold-out, also after temperature
    scaling fitted on it."""
    probs = np.exp(log_softmax(test_log_probs.astype(np.float64), axis=1))
    rel = reliability(probs, test_labels, bins)
    ece, mce = calibration_errors(rel)
    brier = float(brier_score_loss(test_labels, probs, labels=np.arange(probs.shape[1])))
    t = ece_t = nll_t = rel_t = None
    if val_log_probs is not None and val_labels is not None:
        t = fit_temperature(val_log_probs.astype(np.float64), val_labels)
        scaled = np.exp(log_softmax(test_log_probs.astype(np.float64) / t, axis=1))
        rel_t = reliability(scaled, test_labels, bins)
        ece_t, nll_t = calibration_errors(rel_t)[0], _nll(scaled, test_labels)
    return CalibrationResult(ece, mce, _nll(probs, test_labels), brier, rel, t, ece_t, nll_t,
                             rel_t)
