"""Evaluation suites for any stored run: corruptions, calibration, adversarial, explanations,
and (asked by name, not in `all`) masking, which checks the adversarial figures themselves.

`SUITES[name](subject, options)` measures one suite and returns a `SuiteResult` (registered
metrics for tables and comparisons, details for plots); `evaluate_run` runs several, keeps each
in the store as soon as it is measured, and skips any already stored with the same options.
Adding a suite is one registered function here and its metrics in metrics.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import torch
from torch import nn

from .data import Dataset, cache_dir, holdout, input_stats, load
from .errors import UserError
from .metrics import EPSILONS, TestOutputs
from .models import Standardised, model_entry
from .record import RunRecord, SuiteResult
from .robust import attacks, corrupted_set
from .robust.calibration import calibrate
from .robust.masking import check_masking
from .robust.saliency import saliency
from .store import Store, load_checkpoint

SUITES: dict[str, Callable[[Subject, SuiteOptions], SuiteResult]] = {}
TORCH_ONLY: set[str] = set()  # suites that need gradients: not for scikit-learn models
BY_NAME: set[str] = set()  # suites `--suite all` leaves out: slow checks, asked for by name
BATCH = 500  # images per forward pass: large enough to amortise, small enough for 2 cores


@dataclass(frozen=True)
class SuiteOptions:
    """What the suites run with; a stored result with other options is measured again."""

    corruption_seed: int = 0  # every model sees byte-identical corrupted images for a seed
    attack_images: int = 1000  # the first N test images are attacked (up to 10,000)
    epsilons: tuple[float, ...] = EPSILONS  # L-inf radii in pixel space [0, 1]
    pgd_steps: int = 40
    attack_seed: int = 0  # PGD's random start
    strong_steps: int = 100  # masking: PGD steps of the stronger attack
    restarts: int = 5  # masking: its random starts (an image survives only if it survives all)
    mistakes: int = 16  # the most confident mistakes kept for the gallery
    saliency_images: int = 8  # test digits explained with integrated gradients

    def of(self, suite: str) -> dict:
        """The options a suite depends on: only those decide whether to measure again."""
        names = {"corruptions": ("corruption_seed",),
                 "adversarial": ("attack_images", "epsilons", "pgd_steps", "attack_seed"),
                 "masking": ("attack_images", "epsilons", "pgd_steps", "attack_seed",
                             "strong_steps", "restarts"),
                 "explanations": ("mistakes", "saliency_images")}.get(suite, ())
        return {n: list(v) if isinstance(v, tuple) else v
                for n, v in dataclasses.asdict(self).items() if n in names}


@dataclass
class Subject:
    """A stored run made ready for evaluation."""

    record: RunRecord
    data: Dataset
    model: nn.Module | None  # pixels in [0, 1] -> logits; None for scikit-learn models
    log_probs: Callable[[np.ndarray], np.ndarray]  # uint8 images [N, 28, 28] -> [N, classes]
    progress: bool = False


def register_suite(name: str, torch_only: bool = False,
                   by_name: bool = False) -> Callable[[Callable], Callable]:
    """Decorator: register a suite under its name."""
    def add(fn: Callable) -> Callable:
        SUITES[name] = fn
        if torch_only:
            TORCH_ONLY.add(name)
        if by_name:
            BY_NAME.add(name)
        return fn
    return add


def _torch_log_probs(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    @torch.inference_mode()
    def run(images: np.ndarray) -> np.ndarray:
        outs = [torch.log_softmax(model(torch.from_numpy(images[i:i + BATCH]).unsqueeze(1)
                                        .float().div_(255)).float(), 1)
                for i in range(0, len(images), BATCH)]
        return torch.cat(outs).numpy()
    return run


def subject(record: RunRecord, data_dir: str | None = None, progress: bool = False,
            outputs: TestOutputs | None = None) -> Subject:
    """Load a stored run's model: a torch checkpoint, or a scikit-learn model fitted again from
    its config (their fits are deterministic for a seed; the refit is checked against the
    stored test outputs)."""
    if record.status != "complete":
        raise UserError(f"run {record.id} is {record.status}: nothing to evaluate")
    data = load(record.dataset, data_dir)
    if model_entry(record.model).kind == "torch":
        if not record.checkpoint:
            raise UserError(f"run {record.id} has no checkpoint")
        model, cfg = load_checkpoint(record.checkpoint)
        pixel_model = Standardised.of(model, cfg).eval()
        return Subject(record, data, pixel_model, _torch_log_probs(pixel_model), progress)
    return _classical_subject(record, data, progress, outputs)


def _classical_subject(record: RunRecord, data: Dataset, progress: bool,
                       outputs: TestOutputs | None) -> Subject:
    from .train import train  # only scikit-learn runs are refitted: keep torch loads light

    model = train(record.config, data).model
    stats = input_stats(record.config.dataset, record.config.normalize)

    def run(images: np.ndarray) -> np.ndarray:
        x = stats.standardise(torch.from_numpy(images).float().div_(255)).flatten(1).numpy()
        return np.log(np.clip(model.predict_proba(x), 1e-12, 1.0))

    subj = Subject(record, data, None, run, progress)
    if outputs is not None:
        differ = int((run(_test(subj)[0]).argmax(1) != outputs.probabilities.argmax(1)).sum())
        if differ:
            raise UserError(f"refitting run {record.id} ({record.model}) did not reproduce its "
                            f"stored test predictions ({differ} differ)")
    return subj


def _accuracy(log_probs: np.ndarray, labels: np.ndarray) -> float:
    return float((log_probs.argmax(1) == labels).mean())


def _result(suite: str, options: SuiteOptions, metrics: dict, details: dict) -> SuiteResult:
    return SuiteResult(suite, options.of(suite), metrics, details,
                       datetime.now(UTC).isoformat(timespec="seconds"))


def _test(s: Subject) -> tuple[np.ndarray, np.ndarray]:
    """The test images and labels the run was measured on (its test subset, if any)."""
    n = s.record.config.test_subset or len(s.data.test)
    return s.data.test.images[:n].numpy(), s.data.test.labels[:n].numpy()


@register_suite("corruptions")
def _corruptions(s: Subject, o: SuiteOptions) -> SuiteResult:
    """Accuracy on each MNIST-C-style corruption of the test set, their mean and the worst."""
    images, labels = _test(s)
    path = (cache_dir() / "corruptions" /
            f"{s.record.dataset}-n{len(images)}-seed{o.corruption_seed}.npz")
    corrupted = corrupted_set.load_or_build(images, o.corruption_seed, path, s.progress)
    clean = _accuracy(s.log_probs(images), labels)
    per = {name: _accuracy(s.log_probs(x), labels) for name, x in corrupted.items()}
    mean = float(np.mean(list(per.values())))
    return _result("corruptions", o, {"corruption_accuracy": mean,
                                      "worst_corruption_accuracy": min(per.values()),
                                      "corruption_drop": clean - mean},
                   {"clean_accuracy": clean, "per_corruption": per,
                    "worst": min(per, key=per.get)})


@register_suite("calibration")
def _calibration(s: Subject, o: SuiteOptions) -> SuiteResult:
    """ECE, MCE, NLL and Brier on test; temperature scaling fitted on the run's validation
    hold-out (the same images `--val-size` kept out of training), never on test."""
    images, labels = _test(s)
    val_lp = val_y = None
    cfg = s.record.config
    if cfg.val_size:
        val = holdout(s.data.train, cfg.val_size, cfg.seed)[1]
        val_lp, val_y = s.log_probs(val.images.numpy()), val.labels.numpy()
    c = calibrate(s.log_probs(images), labels, val_lp, val_y)
    metrics = {"ece": c.ece, "mce": c.mce, "nll": c.nll, "brier": c.brier,
               "temperature": c.temperature, "ece_scaled": c.ece_scaled,
               "nll_scaled": c.nll_scaled}
    details = {"reliability": dataclasses.asdict(c.reliability),
               "reliability_scaled": c.reliability_scaled and
               dataclasses.asdict(c.reliability_scaled),
               "note": None if cfg.val_size else
               "no temperature scaling: the run has no validation hold-out (train with "
               "--val-size N)"}
    return _result("calibration", o, metrics, details)


@register_suite("adversarial", torch_only=True)
def _adversarial(s: Subject, o: SuiteOptions) -> SuiteResult:
    """Accuracy under FGSM and PGD per L-inf epsilon on the first attack_images test images."""
    images, labels = (a[:o.attack_images] for a in _test(s))
    x, y = torch.from_numpy(images).unsqueeze(1).float().div_(255), torch.from_numpy(labels)
    curves = {name: attacks.robust_accuracy(s.model, x, y.long(), name, (0.0, *o.epsilons),
                                            steps=o.pgd_steps, seed=o.attack_seed,
                                            progress=s.progress)
              for name in ("fgsm", "pgd")}
    metrics = {f"{name}_accuracy_{eps}": acc for name, curve in curves.items()
               for eps, acc in curve.items() if eps in EPSILONS}
    return _result("adversarial", o, metrics,
                   {"images": len(labels),
                    "curves": {n: {str(e): a for e, a in c.items()} for n, c in curves.items()}})


@register_suite("masking", torch_only=True, by_name=True)
def _masking(s: Subject, o: SuiteOptions) -> SuiteResult:
    """Gradient-masking checks (robust/masking.py) at the largest epsilon, on the adversarial
    suite's images: a stronger attack, an unbounded one, random noise and FGSM against PGD."""
    images, labels = (a[:o.attack_images] for a in _test(s))
    r = check_masking(s.model, torch.from_numpy(images), torch.from_numpy(labels),
                      max(o.epsilons), o.pgd_steps, o.strong_steps, o.restarts, o.attack_seed)
    warnings = r.warnings()
    metrics = {"pgd_strong_accuracy": r.pgd_strong, "noise_accuracy": r.noise,
               "unbounded_accuracy": r.unbounded, "masking_warnings": len(warnings)}
    return _result("masking", o, metrics, dataclasses.asdict(r) | {"warnings": warnings})


@register_suite("explanations")
def _explanations(s: Subject, o: SuiteOptions) -> SuiteResult:
    """The most confident mistakes, per-class accuracy, and saliency maps of a few digits."""
    images, labels = _test(s)
    probs = np.exp(s.log_probs(images))
    pred, confidence = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(pred != labels)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:o.mistakes]
    mistakes = [{"index": int(i), "true": int(labels[i]), "pred": int(pred[i]),
                 "probability": round(float(confidence[i]), 4),
                 "image": images[i].tolist()} for i in worst]
    per_class = [float((pred[labels == c] == c).mean()) for c in range(probs.shape[1])]
    maps = []
    if s.model is not None:  # the first digits of the test set, explained for their prediction
        k = o.saliency_images
        x = torch.from_numpy(images[:k]).unsqueeze(1).float().div_(255)
        attr = saliency(s.model, x, torch.from_numpy(pred[:k]).long())
        maps = [{"index": i, "true": int(labels[i]), "pred": int(pred[i]),
                 "image": images[i].tolist(), "saliency": attr[i].numpy().round(4).tolist()}
                for i in range(len(x))]
    return _result("explanations", o, {}, {"mistakes": mistakes, "per_class_accuracy": per_class,
                                           "saliency": maps})


def evaluate_run(store: Store, record: RunRecord, suites: list[str], options: SuiteOptions,
                 data_dir: str | None = None, force: bool = False, progress: bool = False,
                 skip_unfit: bool = False) -> dict[str, SuiteResult]:
    """Measure the suites on a stored run, storing each result as it comes; results stored
    with the same options are reused unless `force`. A torch-only suite asked of a
    scikit-learn run is an error, or skipped with `skip_unfit` (a study's mixed block)."""
    unknown = [n for n in suites if n not in SUITES]
    if unknown:
        raise UserError(f"unknown suite {unknown[0]!r}; choose from {', '.join(SUITES)}, all")
    unfit = [n for n in suites if n in TORCH_ONLY and model_entry(record.model).kind != "torch"]
    if unfit and not skip_unfit:
        raise UserError(f"the {unfit[0]} suite needs a torch model; run {record.id} is a "
                        f"scikit-learn model ({record.model})")
    suites = [n for n in suites if n not in unfit]
    results = dict(record.suites)
    todo = [n for n in suites if force or n not in results or
            results[n].options != options.of(n)]
    if todo:
        subj = subject(record, data_dir, progress, store.outputs(record.id))
        for name in todo:
            results[name] = SUITES[name](subj, options)
            store.add_suite(record.id, results[name])
    return {n: results[n] for n in suites}
