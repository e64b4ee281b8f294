"""Elastic distortion: the field is Simard et al.'s, it moves pixels where it says, and runs
without it draw exactly what they drew before it existed."""

import pytest
import torch

from mnist_lab.augment import ELASTIC_SIGMA, Augment, _gaussian_kernel, elastic_field, random_warp
from mnist_lab.config import TrainConfig
from mnist_lab.train import train


def after_affine_draws(n: int, seed: int) -> torch.Generator:
    """A generator where random_warp leaves it after its affine draws for n images: angle,
    shear, zoom and the two shifts, n uniforms each (drawn even when a range is zero)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(5):
        torch.rand(n, generator=g)
    return g


def test_elastic_field_is_smooth_and_sized_by_alpha():
    field = elastic_field(256, 28, 28, 34.0, torch.Generator().manual_seed(0))
    assert field.shape == (256, 28, 28, 2)
    # uniform noise of variance 1/3, smoothed: std = alpha * sqrt(sum(k2d^2) / 3)
    k = _gaussian_kernel(ELASTIC_SIGMA)
    expected = 34.0 * (k.square().sum() ** 2 / 3).sqrt()
    inner = field[:, 8:-8, 8:-8]  # away from the zero padding of the smoothing
    assert inner.std().item() == pytest.approx(expected.item(), rel=0.1)
    assert 1.0 < expected.item() < 2.0  # Simard's alpha 34, sigma 4: about a pixel and a half
    neighbours = torch.corrcoef(torch.stack([inner[:, :, :-1].flatten(),
                                             inner[:, :, 1:].flatten()]))[0, 1]
    assert neighbours > 0.95  # a field that bends strokes, not noise that tears them


def test_elastic_warp_moves_each_pixel_by_its_field():
    """A horizontal ramp x / 27 sampled at x + dx reads back dx / 27 (bilinear is exact on a
    ramp), so the warp shows the displacement it applied, in pixels and in the right axis."""
    ramp = torch.arange(28.0).div(27).expand(1, 1, 28, 28).repeat(4, 1, 1, 1)
    warped = random_warp(ramp, Augment(elastic=8.0), torch.Generator().manual_seed(5))
    dx = elastic_field(4, 28, 28, 8.0, after_affine_draws(4, seed=5))[..., 0]
    inside = (slice(None), 0, slice(6, -6), slice(6, -6))
    moved = (warped - ramp)[inside] * 27
    assert moved.abs().mean() > 0.1
    assert torch.allclose(moved, dx[:, 6:-6, 6:-6], atol=1e-3)


def test_runs_without_elastic_draw_what_they_drew_before():
    """The field is drawn after the affine parameters and only when on: with it off the
    generator ends where the affine draws leave it, so stored runs keep their numbers."""
    x = torch.rand(8, 1, 28, 28)
    off, on = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    plain = random_warp(x, Augment(rotate=10, translate=0.1), off)
    bent = random_warp(x, Augment(rotate=10, translate=0.1, elastic=34), on)
    assert torch.equal(off.get_state(), after_affine_draws(8, seed=1).get_state())
    assert not torch.equal(on.get_state(), off.get_state()) and not torch.allclose(plain, bent)
    assert TrainConfig(elastic=0.0).key() == TrainConfig().key()
    assert TrainConfig(elastic=34.0).key() != TrainConfig().key()


def test_a_short_run_with_elastic_distortion_learns(mnist):
    outcome = train(TrainConfig(model="mlp", subset=2000, epochs=2, batch_size=64, threads=1,
                                elastic=34.0, test_subset=2000), mnist)
    assert outcome.history[-1].test_accuracy > 0.80  # 85% measured
