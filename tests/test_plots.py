"""Every registered plot kind draws from stored runs: one, several seeds, a facet, no runs."""

import pytest

from mnist_lab.config import TrainConfig
from mnist_lab.document import Report
from mnist_lab.metrics import Epoch, classify
from mnist_lab.plots import PLOTS
from mnist_lab.record import RunRecord, StudyLabel, SuiteResult
from mnist_lab.report import PLOTS as REPORT_PLOTS  # noqa: F401 - registers every kind

SPECS = {"curves": {"metrics": ["train_accuracy", "test_loss"], "zoom_from": 2},
         "sweep": {"x": "lr", "metrics": ["test_accuracy"]},
         "confusion": {}, "adversarial": {}, "corruptions": {}, "reliability": {},
         "gallery": {}, "search_history": {}, "importances": {},
         "pareto": {"anchors": [{"params": 1936, "accuracy": 99.1, "label": "a source",
                                 "best_epoch_on_test": True}]}}
SEARCH = {"space": {"lr": {"low": 0.001, "high": 1.0, "log": True},
                    "batch_size": {"choices": [32, 64]}}}
IMAGE = [[(i * j) % 256 for j in range(28)] for i in range(28)]


def _suites(lr: float) -> dict[str, SuiteResult]:
    """Suite results shaped as suites.py stores them (values made up, structure real)."""
    edges = [i / 15 for i in range(16)]
    rel = {"edges": edges, "counts": [0] * 10 + [5] * 5,
           "confidence": [None] * 10 + [0.7, 0.75, 0.8, 0.9, 0.97],
           "accuracy": [None] * 10 + [0.6, 0.7, 0.8, 0.85, 0.99]}
    curve = {str(e): max(0.0, 0.99 - e * (3 - lr)) for e in (0.0, 0.05, 0.1, 0.2, 0.3)}
    return {
        "corruptions": SuiteResult("corruptions", {}, {}, {
            "clean_accuracy": 0.99, "per_corruption": {"fog": 0.5 + lr, "zigzag": 0.8}}),
        "calibration": SuiteResult("calibration", {}, {"ece": 0.02}, {
            "reliability": rel, "reliability_scaled": rel}),
        "adversarial": SuiteResult("adversarial", {}, {}, {
            "images": 100, "curves": {"fgsm": curve, "pgd": curve}}),
        "explanations": SuiteResult("explanations", {}, {}, {
            "mistakes": [{"true": 3, "pred": 5, "probability": 0.9, "image": IMAGE}] * 3,
            "saliency": [{"true": 7, "pred": 7, "image": IMAGE, "saliency": IMAGE}] * 2})}


def _run(lr: float, seed: int) -> RunRecord:
    history = [Epoch(e, train_loss=1 / e, train_accuracy=0.5 + 0.1 * e + lr,
                     test_loss=1.1 / e, test_accuracy=0.45 + 0.1 * e + lr / 2,
                     val_accuracy=0.44 + 0.1 * e + lr / 3) for e in (1, 2, 3)]
    labels = [0, 1, 2, 3] * 5
    cfg = TrainConfig(lr=lr, seed=seed, batch_size=32 if lr < 0.05 else 64)
    return RunRecord(f"r{lr}{seed}", f"k{lr}{seed}", "complete", cfg, "0", 7, history,
                     classify(labels, labels[::-1]), suites=_suites(lr),
                     label=StudyLabel("s", "b", f"trial-00{int(lr * 100) % 10}", seed))


def test_every_plot_kind_has_a_spec():
    assert set(PLOTS) == set(SPECS)


@pytest.mark.parametrize("kind", sorted(PLOTS))
@pytest.mark.parametrize("seeds", [1, 3])
def test_plot_kind_draws(kind, seeds, tmp_path):
    block = {"name": "b", "search": SEARCH}
    lrs = (0.01, 0.1, 0.02, 0.3)  # variants named as search trials, so every kind has data
    names = [f"trial-00{i}" for i in range(len(lrs))]
    groups = {("b", n): [_run(lr, s) for s in range(seeds)] for n, lr in zip(names, lrs,
                                                                            strict=True)}
    rep = Report(tmp_path)
    PLOTS[kind](rep, {"kind": kind, **SPECS[kind]}, block, names, groups)
    images = [p for p in rep.parts if p[0] == "img"]
    assert images and all(p[1].stat().st_size > 1000 for p in images)
    captions = " ".join(p[2] for p in images)
    if kind == "curves":
        assert ("band = min–max" in captions) == (seeds > 1)


@pytest.mark.parametrize("kind", sorted(PLOTS))
def test_plot_kind_with_no_runs_draws_nothing_or_an_empty_figure(kind, tmp_path):
    rep = Report(tmp_path)
    PLOTS[kind](rep, {"kind": kind, **SPECS[kind]}, {"name": "b", "search": SEARCH}, ["v"], {})
    assert all(p[0] in ("img", "p") for p in rep.parts)


def test_reliability_diagrams_wrap_at_four_panels_a_row():
    from mnist_lab.suite_figures import reliability_diagrams
    series = [(f"v{i}", [_run(0.1, 0).suites["calibration"]]) for i in range(6)]
    fig = reliability_diagrams(series)
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(fig.axes) == 8 and len(shown) == 6
    assert len({round(ax.get_position().y0, 2) for ax in shown}) == 2  # two rows
