"""What a run measures, in one vocabulary: each metric's name, format and direction; the
per-epoch history entry; the test-set classification metrics (from scikit-learn).

Every name a study file, a report, `runs show` or the JSON output uses is registered here once,
with how it is displayed, so no reader guesses a format from a name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .errors import UserError


@dataclass(frozen=True)
class Metric:
    """A registered metric: how it reads and how it is shown."""

    name: str
    kind: str  # fraction (shown as %), loss, count, seconds, rate or value
    help: str
    higher_is_better: bool = True
    suite: str | None = None  # the evaluation suite that measures it (suites.py)

    def format(self, x: float | None) -> str:
        """The value as a person reads it: 99.44%, 0.0274, 7,432, 12.3."""
        if x is None:
            return "—"
        return {"fraction": f"{100 * x:.2f}%", "loss": f"{x:.4f}", "count": f"{x:,.0f}",
                "seconds": f"{x:.1f}", "rate": f"{x:,.0f}"}.get(self.kind, f"{x:.4g}")

    def format_spread(self, mean: str, sd: float) -> str:
        """A standard deviation at the precision its mean is shown with: 27.62 ± 0.53."""
        if self.kind == "fraction":
            return f"{100 * sd:.2f}"
        if "e" in mean:
            return self.format(sd)
        return f"{sd:,.{len(mean.partition('.')[2])}f}"


METRICS: dict[str, Metric] = {}


def _register(name: str, kind: str, help: str, higher_is_better: bool = True,  # noqa: A002
              suite: str | None = None) -> None:
    METRICS[name] = Metric(name, kind, help, higher_is_better, suite)


# Per epoch (and, as the last epoch's value, per run)
_register("train_loss", "loss", "mean training loss over the epoch", False)
_register("train_accuracy", "fraction", "training accuracy (running, over the epoch)")
_register("val_loss", "loss", "validation loss", False)
_register("val_accuracy", "fraction", "validation accuracy")
_register("test_loss", "loss", "test loss", False)
_register("test_accuracy", "fraction", "test accuracy")
_register("gap", "fraction", "train minus test accuracy (overfitting)", False)
_register("weight_norm", "value", "L2 norm of all parameters")
_register("lr", "value", "learning rate at the epoch's last step")
_register("seconds", "seconds", "training time of the epoch", False)
# Per run
_register("best_test_accuracy", "fraction", "highest test accuracy of any epoch")
_register("best_train_accuracy", "fraction", "highest training accuracy of any epoch")
_register("params", "count", "trainable parameters")
_register("mflops", "value", "forward pass FLOPs per image, millions (torch's flop counter)",
          False)
_register("epochs_run", "count", "epochs trained")
_register("wall_seconds", "seconds", "wall time of the run", False)
_register("train_images_per_s", "rate", "training throughput")
_register("infer_images_per_s", "rate", "inference throughput")
_register("seconds_to_target", "seconds", "process start to the target accuracy", False)
_register("peak_rss_mb", "value", "peak resident memory, MB", False)
_register("macro_precision", "fraction", "mean of per-class precision on test")
_register("macro_recall", "fraction", "mean of per-class recall on test")
_register("macro_f1", "fraction", "mean of per-class F1 on test")
# Measured by `mnist-lab evaluate --suite` (suites.py) and stored with the run
_register("corruption_accuracy", "fraction", "mean test accuracy over the 15 MNIST-C-style "
          "corruptions", suite="corruptions")
_register("worst_corruption_accuracy", "fraction", "test accuracy under the corruption that "
          "hurts most", suite="corruptions")
_register("corruption_drop", "fraction", "clean minus mean corrupted test accuracy", False,
          suite="corruptions")
_register("ece", "fraction", "expected calibration error on test (15 bins)", False,
          suite="calibration")
_register("mce", "fraction", "maximum calibration error on test (15 bins)", False,
          suite="calibration")
_register("nll", "loss", "negative log-likelihood on test", False, suite="calibration")
_register("brier", "loss", "multi-class Brier score on test", False, suite="calibration")
_register("temperature", "value", "temperature fitted on the validation hold-out",
          suite="calibration")
_register("ece_scaled", "fraction", "ECE after temperature scaling", False, suite="calibration")
_register("nll_scaled", "loss", "test NLL after temperature scaling", False, suite="calibration")
EPSILONS = (0.05, 0.1, 0.2, 0.3)  # L-inf radii in pixel space [0, 1] that have metric names
for _attack, _what in (("fgsm", "FGSM"), ("pgd", "PGD (40 steps, random start)")):
    for _eps in EPSILONS:
        _register(f"{_attack}_accuracy_{_eps}", "fraction",
                  f"accuracy under {_what} at L-inf eps = {_eps}", suite="adversarial")
_register("pgd_strong_accuracy", "fraction", "accuracy under PGD with more steps and random "
          "restarts, at the largest eps (gradient-masking check)", suite="masking")
_register("noise_accuracy", "fraction", "accuracy under random +-eps sign noise at the largest "
          "eps (gradient-masking check)", suite="masking")
_register("unbounded_accuracy", "fraction", "accuracy under PGD at eps = 1, which can reach any "
          "image (should be ~0; gradient-masking check)", False, suite="masking")
_register("masking_warnings", "count", "gradient-masking checks failed (0 of 4 is clean)", False,
          suite="masking")
# The columns a study block's `evaluate = [suite, ...]` adds to its table
SUITE_COLUMNS = {"corruptions": ("corruption_accuracy", "worst_corruption_accuracy"),
                 "calibration": ("ece", "ece_scaled"),
                 "adversarial": ("pgd_accuracy_0.1", "pgd_accuracy_0.3"),
                 "explanations": (),
                 "masking": ("pgd_strong_accuracy", "masking_warnings")}


def metric(name: str) -> Metric:
    """The registered metric, or a UserError that lists them."""
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    return METRICS[name]


@dataclass
class Epoch:
    """One epoch of a run's history; None where the run has no such split."""

    epoch: int
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    gap: float | None = None
    weight_norm: float | None = None
    lr: float | None = None
    seconds: float | None = None

    def to_dict(self) -> dict:
        """The entry as JSON, without the fields this run does not have."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class Timing:
    """How long a run took and how fast it went."""

    wall_seconds: float | None = None  # the whole run, evaluation included
    train_images_per_s: float | None = None
    infer_images_per_s: float | None = None
    seconds_to_target: float | None = None  # process start to --stop-at-accuracy; None: missed
    resumed_at_epoch: int | None = None  # the epoch a resumed run went on from
    peak_rss_mb: float | None = None
    # Runs trained together as one batched model (pack.py), this one included; None: alone.
    # A packed run's wall time is the pack's, and its images/s its own share of the pack's.
    packed: int | None = None


@dataclass(frozen=True)
class TestOutputs:
    """What the final model said about each test image: what comparisons and ensembles read,
    so that they never re-evaluate a checkpoint."""

    __test__ = False  # a name pytest would otherwise try to collect

    probabilities: np.ndarray  # class probabilities, float16 [N, classes]
    labels: np.ndarray  # the true classes, uint8 [N]


@dataclass(frozen=True)
class Confused:
    """An off-diagonal cell of the confusion matrix."""

    true: int
    pred: int
    count: int


@dataclass
class Classification:
    """Test-set metrics of the final model: per-class lists are indexed by class."""

    accuracy: float
    precision: list[float]
    recall: list[float]
    f1: list[float]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    confusion_matrix: list[list[int]]  # counts [true][predicted]
    most_confused: list[Confused]

    @classmethod
    def from_dict(cls, d: dict) -> Classification:
        """Rebuild from to_dict()'s JSON."""
        return cls(**{**d, "most_confused": [Confused(**c) for c in d["most_confused"]]})

    def to_dict(self) -> dict:
        """JSON-ready."""
        return dataclasses.asdict(self)


def most_confused(cm: np.ndarray, k: int = 5) -> list[Confused]:
    """The k largest off-diagonal cells, largest first."""
    off = np.array(cm)
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:k]
    cells = [np.unravel_index(i, off.shape) for i in order]
    return [Confused(int(t), int(p), int(off[t, p])) for t, p in cells if off[t, p] > 0]


def classify(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 10) -> Classification:
    """Accuracy, per-class precision/recall/F1 and their macro means, confusion matrix."""
    # Imported here: scikit-learn (with scipy and pandas) is ~1 s of start-up a training run
    # would otherwise pay before its first batch, and classify only runs once it has finished.
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = np.arange(n_classes)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return Classification(
        accuracy=float(np.trace(cm) / cm.sum()),
        precision=precision.round(6).tolist(), recall=recall.round(6).tolist(),
        f1=f1.round(6).tolist(), macro_precision=float(precision.mean()),
        macro_recall=float(recall.mean()), macro_f1=float(f1.mean()),
        confusion_matrix=cm.tolist(), most_confused=most_confused(cm))
