"""Every registered plot kind draws from stored runs: one, several seeds, a facet, no runs."""

import pytest

from mnist_lab.config import TrainConfig
from mnist_lab.document import Report
from mnist_lab.metrics import Epoch, classify
from mnist_lab.plots import PLOTS
from mnist_lab.record import RunRecord

SPECS = {"curves": {"metrics": ["train_accuracy", "test_loss"], "zoom_from": 2},
         "sweep": {"x": "lr", "metrics": ["test_accuracy"]},
         "confusion": {}}


def _run(lr: float, seed: int) -> RunRecord:
    history = [Epoch(e, train_loss=1 / e, train_accuracy=0.5 + 0.1 * e + lr,
                     test_loss=1.1 / e, test_accuracy=0.45 + 0.1 * e + lr / 2) for e in (1, 2, 3)]
    labels = [0, 1, 2, 3] * 5
    return RunRecord(f"r{lr}{seed}", f"k{lr}{seed}", "complete", TrainConfig(lr=lr, seed=seed),
                     "0", 7, history, classify(labels, labels[::-1]))


def test_every_plot_kind_has_a_spec():
    assert set(PLOTS) == set(SPECS)


@pytest.mark.parametrize("kind", sorted(PLOTS))
@pytest.mark.parametrize("seeds", [1, 3])
def test_plot_kind_draws(kind, seeds, tmp_path):
    block = {"name": "b"}
    groups = {("b", f"lr={lr}"): [_run(lr, s) for s in range(seeds)] for lr in (0.01, 0.1)}
    rep = Report(tmp_path)
    PLOTS[kind](rep, {"kind": kind, **SPECS[kind]}, block, ["lr=0.01", "lr=0.1"], groups)
    images = [p for p in rep.parts if p[0] == "img"]
    assert images and all(p[1].stat().st_size > 1000 for p in images)
    captions = " ".join(p[2] for p in images)
    if kind == "curves":
        assert ("band = min–max" in captions) == (seeds > 1)


@pytest.mark.parametrize("kind", sorted(PLOTS))
def test_plot_kind_with_no_runs_draws_nothing_or_an_empty_figure(kind, tmp_path):
    rep = Report(tmp_path)
    PLOTS[kind](rep, {"kind": kind, **SPECS[kind]}, {"name": "b"}, ["v"], {})
    assert all(p[0] in ("img", "p") for p in rep.parts)
