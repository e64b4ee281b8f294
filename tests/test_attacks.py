"""L∞ attacks and adversarial training, on models trained for real on a slice of MNIST."""

import dataclasses

import pytest
import torch

from mnist_lab.config import ADVERSARIAL, TrainConfig
from mnist_lab.errors import UserError
from mnist_lab.evaluate import evaluate
from mnist_lab.models import Standardised
from mnist_lab.robust.attacks import ATTACKS, fgsm, pgd, robust_accuracy
from mnist_lab.train import train

EPS = [0.0, 0.05, 0.1, 0.2, 0.3]
N_TEST = 300  # test images attacked: enough for accuracy to move in steps of 0.33%
# ~190 SGD steps on 2,000 images: ~95% clean, and as much budget as the adversarial run gets
BUDGET = dict(subset=2000, epochs=3, batch_size=32, rotate=0, translate=0, test_subset=N_TEST,
              threads=1)


def pixel_model(cfg: TrainConfig, mnist) -> tuple[TrainConfig, Standardised]:
    outcome = train(cfg, mnist)
    assert outcome.status == "complete"
    return cfg, Standardised.of(outcome.model, cfg)


@pytest.fixture(scope="module")
def standard(mnist):
    """A compact_step3 trained normally, taking pixels in [0, 1]."""
    return pixel_model(TrainConfig(**BUDGET), mnist)


@pytest.fixture(scope="module")
def test_set(mnist):
    return mnist.test.images[:N_TEST], mnist.test.labels[:N_TEST]


@pytest.fixture(scope="module")
def curves(standard, test_set):
    """{attack: {ε: accuracy}} of the standard model (PGD with 10 steps, to keep it quick)."""
    return {name: robust_accuracy(standard[1], *test_set, name, EPS, steps=10)
            for name in ("fgsm", "pgd")}


def test_the_registry_holds_every_training_attack():
    assert set(ATTACKS) == set(ADVERSARIAL) - {"none"} == {"fgsm", "pgd"}


def test_epsilon_zero_is_clean_accuracy_exactly(standard, curves, mnist):
    cfg, model = standard
    clean = evaluate(model.model, mnist.test.take(torch.arange(N_TEST)),
                     model.stats, torch.device("cpu"))
    assert curves["fgsm"][0.0] == curves["pgd"][0.0] == clean.accuracy
    assert clean.accuracy > 0.9  # a model worth attacking


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_accuracy_does_not_increase_with_epsilon(curves, attack):
    accuracies = [curves[attack][eps] for eps in EPS]
    assert accuracies == sorted(accuracies, reverse=True)
    assert accuracies[-1] < accuracies[0] - 0.3  # ε = 0.3 breaks a standard model


def test_pgd_is_at_least_as_strong_as_fgsm(curves):
    for eps in EPS:
        assert curves["pgd"][eps] <= curves["fgsm"][eps]
    assert curves["pgd"][0.3] < 0.05


def test_adversarial_images_stay_in_the_ball_and_in_pixel_range(standard, test_set):
    model = standard[1].eval()
    x = test_set[0][:64].unsqueeze(1).float() / 255
    y = test_set[1][:64]
    for eps in (0.05, 0.3):
        for x_adv in (fgsm(model, x, y, eps), pgd(model, x, y, eps, steps=5)):
            assert (x_adv - x).abs().max() <= eps + 1e-6
            assert x_adv.min() >= 0 and x_adv.max() <= 1
            assert (x_adv - x).abs().max() > eps / 2  # and it did move


def test_pgd_is_reproducible_from_its_seed(standard, test_set):
    model = standard[1].eval()
    x, y = test_set[0][:64].unsqueeze(1).float() / 255, test_set[1][:64]

    def attack(seed: int) -> torch.Tensor:
        return pgd(model, x, y, 0.2, steps=3, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(attack(1), attack(1))
    assert not torch.equal(attack(1), attack(2))
    assert torch.equal(pgd(model, x, y, 0.2, steps=3, random_start=False),
                       pgd(model, x, y, 0.2, steps=3, random_start=False))


def test_robust_accuracy_leaves_the_model_as_it_found_it(standard, test_set):
    model = standard[1].train()
    grads = [p.grad.clone() for p in model.parameters()]  # the last training step's
    try:
        again = robust_accuracy(model, *test_set, "pgd", [0.1], steps=2, seed=3)
        assert again == robust_accuracy(model, *test_set, "pgd", [0.1], steps=2, seed=3)
        assert all(m.training for m in model.modules())
        assert all(p.requires_grad for p in model.parameters())
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    finally:
        model.eval()


def test_attacks_refuse_inference_mode_with_a_clear_message(standard, test_set):
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        robust_accuracy(standard[1], *test_set, "fgsm", [0.1])
    with torch.no_grad():  # no_grad is fine: the attack switches gradients back on
        assert robust_accuracy(standard[1], *test_set, "fgsm", [0.0, 0.1])[0.1] < 1
    with pytest.raises(UserError, match="unknown attack 'cw'"):
        robust_accuracy(standard[1], *test_set, "cw", [0.1])


def test_adversarial_training_is_deterministic_and_changes_the_run(mnist):
    cfg = TrainConfig(**dict(BUDGET, epochs=1, subset=500), adversarial="pgd", attack_steps=2)
    first, second = train(cfg, mnist), train(cfg, mnist)
    clean = train(dataclasses.replace(cfg, adversarial="none"), mnist)
    strip = [dataclasses.replace(e, seconds=None) for e in first.history]
    assert strip == [dataclasses.replace(e, seconds=None) for e in second.history]
    assert strip != [dataclasses.replace(e, seconds=None) for e in clean.history]


@pytest.mark.slow
def test_adversarial_training_makes_the_model_robust_to_pgd(standard, curves, mnist, test_set):
    """Same budget, PGD-7 training at ε = 0.1: far more accuracy left under PGD at ε = 0.1
    (measured: ~0.87 against ~0.6)."""
    cfg = TrainConfig(**BUDGET, adversarial="pgd", epsilon=0.1)
    robust = robust_accuracy(pixel_model(cfg, mnist)[1], *test_set, "pgd", [0.0, 0.1],
                             steps=10)
    assert robust[0.0] > 0.9  # still a classifier
    assert robust[0.1] > curves["pgd"][0.1] + 0.15


@pytest.mark.parametrize("changes, phrase", [
    (dict(adversarial="pgd40"), "adversarial must be one of none, fgsm, pgd, got 'pgd40'"),
    (dict(epsilon=1.5), "epsilon is an L-infinity radius on [0, 1] pixels"),
    (dict(epsilon=-0.1), "must be in [0, 1], got -0.1"),
    (dict(attack_steps=0), "attack steps must be >= 1, got 0"),
])
def test_bad_adversarial_settings_are_user_errors(changes, phrase):
    with pytest.raises(UserError) as e:
        TrainConfig(**{"adversarial": "pgd", **changes}).validate()
    assert phrase in str(e.value)


def test_adversarial_settings_reach_the_key_only_when_set():
    assert TrainConfig(adversarial="none", epsilon=0.3, attack_steps=7).key() == \
        TrainConfig().key()
    assert TrainConfig(adversarial="pgd").key() != TrainConfig().key()


def test_the_cli_rejects_bad_adversarial_flags(cli, assert_one_line_error):
    code, _, err = cli("train", "--adversarial", "deepfool")
    assert_one_line_error(code, err, "invalid choice: 'deepfool'")
    code, _, err = cli("train", "--adversarial", "pgd", "--epsilon", "2")
    assert_one_line_error(code, err, "epsilon is an L-infinity radius")


def test_a_classical_model_cannot_train_adversarially(mnist):
    with pytest.raises(UserError, match="adversarial training needs a torch model"):
        train(TrainConfig(model="logreg", adversarial="fgsm", subset=100), mnist)
