"""robust.saliency on a compact CNN trained briefly on real MNIST (~4 s on one core): shapes,
the completeness of integrated gradients, and that the map marks the ink the model relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from mnist_lab.config import RunContext, TrainConfig
from mnist_lab.data import InputStats
from mnist_lab.models import Standardised
from mnist_lab.robust import saliency as sal
from mnist_lab.robust.saliency import METHODS, saliency, signed_map, to_heatmap
from mnist_lab.worker import execute


@pytest.fixture(scope="module")
def net(data_root) -> Standardised:
    """compact_step3, one epoch on 10,000 images: ~97.5% on the test set."""
    cfg = TrainConfig(epochs=1, batch_size=64, rotate=0, translate=0, subset=10_000)
    _, model = execute(cfg, RunContext(data_dir=str(data_root)))
    return Standardised.of(model.cpu(), cfg)


@pytest.fixture(scope="module")
def digits(mnist) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 16 test digits as pixels in [0, 1], [16, 1, 28, 28], and their labels."""
    return mnist.test.images[:16].float().div(255).unsqueeze(1), mnist.test.labels[:16].long()


def logit(net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each image's target logit, without gradients."""
    with torch.no_grad():
        return net(x).gather(1, target[:, None])[:, 0]


@pytest.mark.parametrize("method", METHODS)
def test_shape_finite_deterministic(net, digits, method):
    x, y = digits
    attr = saliency(net, x, y, method=method)
    assert attr.shape == (16, 28, 28) and attr.dtype == torch.float32
    assert torch.isfinite(attr).all() and attr.abs().sum() > 0
    assert torch.equal(attr, saliency(net, x, y, method=method))


@pytest.mark.parametrize("steps, tolerance", [(32, 0.2), (128, 0.1)])
def test_integrated_gradients_completeness(net, digits, steps, tolerance):
    """Attributions add up to logit(x) - logit(black) for the target class (logits ~1 to 10;
    the worst of 16 digits misses by ~0.12 at the served 32 steps, ~0.04 at 128)."""
    x, y = digits
    gap = logit(net, x, y) - logit(net, torch.zeros_like(x), y)
    total = saliency(net, x, y, steps=steps).sum((1, 2))
    assert total.tolist() == pytest.approx(gap.tolist(), rel=0.05, abs=tolerance)


def test_exact_on_a_linear_model(digits):
    """For softmax regression on raw pixels both methods are exactly weight x pixel."""
    torch.manual_seed(0)
    linear = nn.Linear(784, 10)
    net = Standardised(nn.Sequential(nn.Flatten(), linear), InputStats())
    x, y = digits
    expected = linear.weight.detach()[y].reshape(-1, 28, 28) * x[:, 0]
    for method in METHODS:
        assert torch.allclose(saliency(net, x, y, method=method), expected, atol=1e-5), method


def test_attributions_sit_on_the_ink(net, digits):
    """A black baseline gives the background exactly 0; the ink carries the evidence."""
    x, y = digits
    attr, ink = saliency(net, x, y), x[:, 0] > 0
    assert (attr[~ink] == 0).all()
    assert attr[ink].abs().mean() > 0
    net_evidence = attr.sum((1, 2))  # = logit(digit) - logit(black) for its own class
    assert net_evidence.mean() > 0 and (net_evidence > 0).float().mean() >= 0.75


def test_most_salient_ink_matters_most(net, digits):
    """Erasing the most salient 15% of the ink lowers the target logit more than erasing as
    many ink pixels at random: the map marks what the model relies on."""
    x, y = digits
    attr = saliency(net, x, y)
    rng = np.random.default_rng(0)
    top, rand = x.clone(), x.clone()
    for i in range(len(x)):
        ink = torch.nonzero(x[i, 0].flatten() > 0)[:, 0]
        k = max(1, int(0.15 * len(ink)))
        by_attr = ink[attr[i].flatten()[ink].argsort(descending=True)[:k]]
        top[i, 0].view(-1)[by_attr] = 0
        rand[i, 0].view(-1)[torch.from_numpy(rng.choice(ink.numpy(), k, replace=False))] = 0
    base = logit(net, x, y)
    drop_top, drop_rand = base - logit(net, top, y), base - logit(net, rand, y)
    assert drop_top.mean() > 2 * drop_rand.mean()
    assert (drop_top > drop_rand).float().mean() >= 0.9


def test_batches_split_alike(net, digits, monkeypatch):
    """Images attributed in small batches get what they get in one."""
    x, y = digits
    whole = saliency(net, x, y)
    monkeypatch.setattr(sal, "SALIENCY_BATCH", 3 * 32)  # 3 images a batch, the last one 1
    assert torch.allclose(saliency(net, x, y), whole, atol=1e-5)


def test_scalar_target_and_no_grad(net, digits):
    """An int target applies to every image; torch.no_grad() around the call is fine."""
    x, _ = digits
    with torch.no_grad():
        attr = saliency(net, x[:2], 3)
    assert torch.equal(attr, saliency(net, x[:2], torch.tensor([3, 3])))


def test_inference_mode_and_bad_arguments(net, digits):
    x, y = digits
    with torch.inference_mode(), pytest.raises(RuntimeError, match="outside torch.inference"):
        saliency(net, x, y)
    with pytest.raises(ValueError, match="one of integrated_gradients, gradient"):
        saliency(net, x, y, method="lime")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        saliency(net, x, y, steps=0)


def test_classical_model_has_none(digits):
    x, y = digits
    assert saliency(LogisticRegression(), x, y) is None


def test_maps_for_display():
    attr = torch.zeros(2, 28, 28)
    attr[0, 3, 4], attr[0, 5, 6], attr[0, 7, 8] = 2.0, -4.0, 1.0
    signed = signed_map(attr)
    assert signed.dtype == np.float32 and signed.shape == (2, 28, 28)
    assert (signed[0, 3, 4], signed[0, 5, 6], signed[0, 7, 8]) == (0.5, -1.0, 0.25)
    assert not signed[1].any()  # an all-zero map stays zero, no division by zero
    heat = to_heatmap(attr)
    assert heat.dtype == np.uint8 and heat.shape == (2, 28, 28)
    assert (heat[0, 3, 4], heat[0, 5, 6], heat[0, 7, 8]) == (255, 0, 128)
    assert heat.sum() == 255 + 128
    assert to_heatmap(attr[0]).shape == (28, 28)
