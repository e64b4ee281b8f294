"""Training: schedules, determinism, divergence, early stop, and accuracy floors on real data."""

import dataclasses
import math

import pytest
import torch

from mnist_lab import evaluate as evaluate_module
from mnist_lab.augment import Augment, prepare
from mnist_lab.config import TrainConfig
from mnist_lab.data import InputStats
from mnist_lab.errors import UserError
from mnist_lab.optim import learning_rate
from mnist_lab.record import RunRecord
from mnist_lab.snapshot import load_snapshot, save_snapshot
from mnist_lab.train import SNAPSHOT_FORMAT, train

TINY = dict(subset=1000, epochs=2, batch_size=64, threads=1)


def history_without_timing(outcome):
    return [dataclasses.replace(e, seconds=None) for e in outcome.history]


def test_onecycle_schedule_shape():
    cfg = TrainConfig(lr=0.1, scheduler="onecycle", warmup=0.2)
    lrs = [learning_rate(cfg, s, 100, 10) for s in range(100)]
    peak = max(range(100), key=lrs.__getitem__)
    assert lrs[0] == pytest.approx(0.004) and lrs[peak] == pytest.approx(0.1, rel=0.02)
    assert 15 <= peak <= 25 and lrs[-1] == pytest.approx(0.0, abs=1e-9)


def test_step_and_constant_schedules():
    step = TrainConfig(lr=1.0, scheduler="step", step_size=2, gamma=0.5)
    assert [learning_rate(step, e * 10, 100, 10) for e in range(5)] == [1, 1, .5, .5, .25]
    assert learning_rate(TrainConfig(lr=0.3, scheduler="none"), 57, 100, 10) == 0.3


def test_augment_off_is_plain_normalisation():
    images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    x = prepare(images, InputStats(0.5, 0.25), Augment())
    assert torch.allclose(x, (images.unsqueeze(1) / 255 - 0.5) / 0.25)


def test_augment_is_seeded_and_moves_pixels():
    images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    aug = Augment(rotate=15, translate=0.1)
    a = prepare(images, InputStats(0, 1), aug, torch.Generator().manual_seed(3))
    b = prepare(images, InputStats(0, 1), aug, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, images.unsqueeze(1) / 255)


def test_same_seed_same_numbers(mnist):
    cfg = dict(TINY, rotate=10, translate=0.1)
    first = train(TrainConfig(seed=7, **cfg), mnist)
    second = train(TrainConfig(seed=7, **cfg), mnist)
    other = train(TrainConfig(seed=8, **cfg), mnist)
    assert history_without_timing(first) == history_without_timing(second)
    assert history_without_timing(first) != history_without_timing(other)


class SimulatedKillError(Exception):
    """Stands in for a kill arriving in the middle of an epoch."""


# Conv net with our SGD and augmentation; MLP with dropout (the global RNG) and torch's Adam;
# the conv net again with a weight average, whose state the snapshot must carry too.
@pytest.mark.parametrize("model, optimizer, lr, ema", [("compact_step3", "sgd", 0.05, 0.0),
                                                       ("fcnn", "adam", 0.001, 0.0),
                                                       ("compact_step3", "sgd", 0.05, 0.99)])
def test_a_killed_run_resumes_from_its_snapshot_with_the_same_numbers(
        mnist, tmp_path, monkeypatch, model, optimizer, lr, ema):
    cfg = TrainConfig(model=model, optimizer=optimizer, lr=lr, rotate=10, translate=0.1,
                      ema=ema, **dict(TINY, epochs=3))
    whole = train(cfg, mnist)
    snapshot, real_evaluate, calls = tmp_path / "partial" / "run.pt", evaluate_module.evaluate, []

    def evaluate_then_die(*args):
        calls.append(1)
        if len(calls) == 3:  # epoch 3's evaluation: the snapshot holds epochs 1 and 2
            raise SimulatedKillError
        return real_evaluate(*args)

    monkeypatch.setattr(evaluate_module, "evaluate", evaluate_then_die)
    with pytest.raises(SimulatedKillError):
        train(cfg, mnist, snapshot=snapshot)
    monkeypatch.setattr(evaluate_module, "evaluate", real_evaluate)
    resumed = train(cfg, mnist, snapshot=snapshot)
    assert resumed.timing.resumed_at_epoch == 2 and whole.timing.resumed_at_epoch is None
    assert history_without_timing(resumed) == history_without_timing(whole)
    assert resumed.classification is not None
    assert resumed.classification == whole.classification


def test_a_snapshot_of_another_run_or_an_unreadable_one_is_ignored(mnist, tmp_path):
    cfg, snapshot = TrainConfig(**TINY), tmp_path / "run.pt"
    longer = TrainConfig(**dict(TINY, epochs=3, seed=5))
    train(longer, mnist, snapshot=snapshot)
    assert snapshot.exists()  # written after epochs 1 and 2, left for the caller to delete
    state = load_snapshot(snapshot, longer.key(), SNAPSHOT_FORMAT)
    assert state is not None and [e["epoch"] for e in state["history"]] == [1, 2]
    assert {"train_accuracy", "test_accuracy"} <= set(state["history"][0])  # the new names
    assert not {"train_acc", "test_acc"} & set(state["history"][0])
    other = train(cfg, mnist, snapshot=snapshot)  # another config's snapshot
    snapshot.write_bytes(b"not a snapshot")
    garbage = train(cfg, mnist, snapshot=snapshot)
    fresh = train(cfg, mnist)
    assert other.timing.resumed_at_epoch is garbage.timing.resumed_at_epoch is None
    assert history_without_timing(other) == history_without_timing(fresh)
    assert history_without_timing(garbage) == history_without_timing(fresh)


def test_a_snapshot_of_an_older_format_is_ignored(mnist, tmp_path):
    """Format 1 kept the history as `*_acc`: this run's own snapshot in it starts over."""
    cfg, snapshot = TrainConfig(**dict(TINY, epochs=3)), tmp_path / "run.pt"
    train(cfg, mnist, snapshot=snapshot)
    state = load_snapshot(snapshot, cfg.key(), SNAPSHOT_FORMAT)
    assert state is not None
    legacy = {"test_accuracy": "test_acc", "train_accuracy": "train_acc"}
    save_snapshot(snapshot, {**state, "format": SNAPSHOT_FORMAT - 1,
                             "history": [{legacy.get(k, k): v for k, v in e.items()}
                                         for e in state["history"]]})
    assert load_snapshot(snapshot, cfg.key(), SNAPSHOT_FORMAT) is None
    resumed = train(cfg, mnist, snapshot=snapshot)
    assert resumed.timing.resumed_at_epoch is None and len(resumed.history) == 3
    assert history_without_timing(resumed) == history_without_timing(train(cfg, mnist))


def test_divergence_is_recorded_not_raised(mnist):
    # lr * l2 > 1 makes the penalty's gradient step overshoot: weights blow up geometrically.
    cfg = TrainConfig(model="softmax", lr=1000.0, l2=1.0, momentum=0, scheduler="none",
                      rotate=0, **dict(TINY, epochs=3))
    outcome = train(cfg, mnist)
    assert outcome.status == "diverged" and len(outcome.history) < 3
    record = RunRecord.from_outcome(cfg, outcome)
    assert record.status == "diverged" and record.metric("epochs_run") < 3


def test_stop_at_accuracy(mnist):
    cfg = TrainConfig(stop_at_accuracy=0.5, **dict(TINY, subset=5000, epochs=4))
    record = RunRecord.from_outcome(cfg, train(cfg, mnist))
    assert record.timing.seconds_to_target is not None and record.metric("epochs_run") < 4
    assert record.metric("seconds_to_target") > 0 and record.metric("test_accuracy") >= 0.5


def test_l2_penalty_shrinks_weights(mnist):
    base = dict(model="softmax", optimizer="sgd", lr=0.5, scheduler="none", rotate=0, **TINY)
    plain = train(TrainConfig(**base), mnist)
    penalised = train(TrainConfig(l2=1e-2, **base), mnist)
    assert penalised.history[-1].weight_norm < 0.7 * plain.history[-1].weight_norm


def test_record_holds_final_metrics(mnist):
    cfg = TrainConfig(model="softmax", rotate=0, val_size=1000, **TINY)
    outcome = train(cfg, mnist)
    entry = outcome.history[-1]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                "test_accuracy", "gap", "weight_norm", "lr", "seconds"):
        value = getattr(entry, key)
        assert value is not None and math.isfinite(value), key
    metrics = outcome.classification
    assert len(metrics.f1) == 10 and len(metrics.confusion_matrix) == 10
    assert metrics.accuracy == pytest.approx(entry.test_accuracy)
    assert outcome.params == 7850 and outcome.env["torch"] == torch.__version__
    record = RunRecord.from_outcome(cfg, outcome)
    assert record.key == cfg.key() and record.params == 7850
    assert record.metric("test_accuracy") == entry.test_accuracy
    assert record.metric("best_test_accuracy") == max(e.test_accuracy for e in outcome.history)
    assert record.metric("epochs_run") == 2 and record.metric("wall_seconds") > 0
    assert record.metric("macro_f1") == metrics.macro_f1
    d = record.to_dict()
    assert d["final"]["test_accuracy"] == entry.test_accuracy and d["final"]["params"] == 7850
    assert d["history"][-1]["val_accuracy"] == entry.val_accuracy
    assert RunRecord.from_dict(d) == record  # the JSON holds the whole record


def test_batch_larger_than_training_set(mnist):
    with pytest.raises(UserError, match="exceeds"):
        train(TrainConfig(subset=100, batch_size=128, epochs=1), mnist)


@pytest.mark.slow
def test_compact_cnn_one_epoch_reaches_98_5(mnist):
    outcome = train(TrainConfig(epochs=1), mnist)
    assert outcome.params < 8000
    assert outcome.history[-1].test_accuracy >= 0.985


@pytest.mark.slow
def test_logistic_regression_on_10k_reaches_88(mnist):
    outcome = train(TrainConfig(model="logreg", subset=10000), mnist)
    assert outcome.history[-1].test_accuracy >= 0.88
    assert outcome.classification.accuracy == pytest.approx(outcome.history[-1].test_accuracy)


@pytest.mark.parametrize("momentum, nesterov, wd", [(0.0, False, 0.0), (0.9, False, 1e-3),
                                                    (0.9, True, 5e-4)])
def test_our_sgd_matches_torch(momentum, nesterov, wd):
    from mnist_lab.optim import SGD

    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    theirs.load_state_dict(ours.state_dict())
    opts = [SGD(ours.parameters(), 0.1, momentum, wd, nesterov),
            torch.optim.SGD(theirs.parameters(), 0.1, momentum, weight_decay=wd,
                            nesterov=nesterov)]
    for step in range(4):
        x = torch.randn(8, 5)
        for model, opt in zip((ours, theirs), opts, strict=True):
            opt.param_groups[0]["lr"] = 0.1 / (step + 1)
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)  # bit for bit: same operations in the same order


KEY_OF_DEFAULTS = "6506f1fd06e92f84"


def test_late_config_fields_key_only_when_changed():
    """Adding a setting must not change the key of configs that leave it at its default."""
    cfg = TrainConfig()
    # the key of the defaults before `normalize` existed (runs stored then must still match)
    assert cfg.key() == KEY_OF_DEFAULTS
    assert TrainConfig(normalize=False).key() != cfg.key()
    assert TrainConfig(normalize=True).key() == cfg.key()
