"""The weight average (TrainConfig.ema): its arithmetic, and what a run with one evaluates."""

import pytest
import torch
from torch import nn

from mnist_lab.config import TrainConfig
from mnist_lab.data import input_stats
from mnist_lab.ema import WeightAverage
from mnist_lab.evaluate import evaluate, resolve_device
from mnist_lab.train import make_splits, train


def test_the_average_warms_up_then_decays_at_its_rate():
    """avg += (1 - d) (w - avg) with d = min(decay, (1 + n) / (10 + n)) after the n-th update."""
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    nn.init.zeros_(net[0].weight)
    avg = WeightAverage(net, decay=0.5)
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    avg.update()  # d = 2/11
    assert avg.model[0].weight.item() == pytest.approx(9 / 11)
    avg.update()  # d = 3/12
    assert avg.model[0].weight.item() == pytest.approx(9 / 11 + 0.75 * 2 / 11)
    for _ in range(20):
        avg.update()  # d = 0.5 from the 8th update on
    assert avg.model[0].weight.item() == pytest.approx(1.0, abs=1e-6)
    net[1].num_batches_tracked += 7  # integer buffers are copied, not averaged
    avg.update()
    assert avg.model[1].num_batches_tracked.item() == 7
    assert not any(p.requires_grad for p in avg.model.parameters())


def test_the_decay_must_be_below_one():
    with pytest.raises(Exception, match=r"ema is a decay per step in \[0, 1\), got 1"):
        TrainConfig(ema=1.0).validate()
    assert TrainConfig(ema=0.0).key() == TrainConfig().key()  # off: the key of old runs


def test_a_run_keeps_and_reports_the_average(mnist):
    """The history's test accuracy and the returned model are the average's, and training
    with it on 10,000 real images for two epochs clears a floor."""
    cfg = TrainConfig(subset=10000, epochs=2, batch_size=64, threads=1, ema=0.99)
    outcome = train(cfg, mnist)
    plain = train(TrainConfig(subset=10000, epochs=2, batch_size=64, threads=1), mnist)
    _, _, test = make_splits(cfg, mnist)
    again = evaluate(outcome.model, test, input_stats(cfg.dataset), resolve_device("cpu"))
    assert again.accuracy == outcome.history[-1].test_accuracy
    assert outcome.history[-1].test_accuracy >= 0.97
    assert outcome.history != plain.history and outcome.params == plain.params
