"""The gradient-masking checks: quiet on an honestly trained model, loud on one whose input
quantisation hides its gradients (Athalye et al. 2018's obfuscated gradients)."""

import json

import pytest
import torch
from torch import nn

from mnist_lab.models import Standardised
from mnist_lab.robust.masking import MaskingResult, check_masking
from mnist_lab.store import load_checkpoint

N = 200  # test images attacked
FAST = dict(steps=10, strong_steps=20, restarts=2)


class Quantised(nn.Module):
    """The model behind a rounding of its input to 5 grey levels: it classifies as well, but
    rounding's gradient is zero, so gradient attacks see nothing."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 4) / 4)


@pytest.fixture(scope="module")
def pixel_model(suite_runs) -> nn.Module:
    model, cfg = load_checkpoint(suite_runs.val_run.checkpoint)
    return Standardised.of(model, cfg).eval()


@pytest.fixture(scope="module")
def test_set(mnist):
    return mnist.test.images[:N], mnist.test.labels[:N]


def test_an_honest_model_passes_every_check(pixel_model, test_set):
    r = check_masking(pixel_model, *test_set, 0.3, **FAST)
    assert r.warnings() == []
    assert r.unbounded == 0.0 and r.pgd_strong <= r.pgd < 0.05
    assert r.noise > r.pgd + 0.2  # noise of the same size hurts far less: the gradient finds it


def test_quantised_inputs_are_flagged(pixel_model, test_set):
    r = check_masking(Quantised(pixel_model), *test_set, 0.3, **FAST)
    warnings = " | ".join(r.warnings())
    assert r.fgsm > 0.8 and r.unbounded > 0.05  # the attacks are blind
    assert "unbounded attack" in warnings and "no better than random noise" in warnings


@pytest.mark.parametrize("fields, phrase", [
    (dict(pgd=0.9, pgd_strong=0.8), "PGD-40 overstates robustness"),
    (dict(unbounded=0.3), "unbounded attack (eps 1) leaves 30.0%"),
    (dict(pgd=0.5, noise=0.5), "no better than random noise"),
    (dict(fgsm=0.5), "one FGSM step (50.0%) beats PGD"),
])
def test_each_failed_check_is_named(fields, phrase):
    honest = dict(eps=0.3, images=1000, steps=40, strong_steps=100, restarts=5, pgd=0.9,
                  pgd_strong=0.89, fgsm=0.95, noise=0.99, unbounded=0.0)
    assert MaskingResult(**honest).warnings() == []
    (warning,) = MaskingResult(**honest | fields).warnings()
    assert phrase in warning


def test_the_suite_is_stored_and_left_out_of_all(cli, suite_runs):
    run, root = suite_runs.val_run, suite_runs.root
    code, out, err = cli("evaluate", run.id, "--suite", "masking", "--attack-images", "50",
                         "--pgd-steps", "5", "--strong-steps", "5", "--restarts", "2",
                         "--runs-dir", root, "--json")
    assert code == 0, err
    masking = json.loads(out)["suites"]["masking"]
    assert masking["metrics"]["masking_warnings"] == 0 == len(masking["details"]["warnings"])
    assert masking["options"]["restarts"] == 2
    from mnist_lab.suite_command import suite_names
    assert "masking" not in suite_names("all") and suite_names("masking") == ["masking"]
