"""Whole-batch preprocessing: uint8 -> float, seeded random affine and elastic augmentation,
standardisation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data import InputStats


@dataclass(frozen=True)
class Augment:
    """Ranges of the random affine transform and the elastic field's scale; all zero means no
    augmentation."""

    rotate: float = 0.0  # max rotation, degrees (uniform in ±rotate)
    translate: float = 0.0  # max shift as a fraction of the image side (uniform in ±translate)
    scale: float = 0.0  # max relative zoom (uniform in 1 ± scale)
    shear: float = 0.0  # max shear angle, degrees
    elastic: float = 0.0  # elastic distortion: the smoothed random field's scale alpha, pixels

    @classmethod
    def of(cls, cfg: TrainConfig) -> Augment:
        """The augmentation a training config asks for."""
        return cls(cfg.rotate, cfg.translate, cfg.scale, cfg.shear, cfg.elastic)

    @property
    def active(self) -> bool:
        """Whether any transform is switched on."""
        return any((self.rotate, self.translate, self.scale, self.shear, self.elastic))


# Simard et al. (2003) smooth their random displacement field with a Gaussian of sigma 4 pixels
# (and scale it by alpha = 34): smooth enough to bend a stroke without tearing it.
ELASTIC_SIGMA = 4.0


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of radius 2 sigma: the smoothing of the elastic field."""
    r = int(2 * sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-t.square() / (2 * sigma * sigma))
    return k / k.sum()


def elastic_field(n: int, h: int, w: int, alpha: float, g: torch.Generator) -> torch.Tensor:
    """Simard et al.'s elastic displacement, [N, H, W, 2] in pixels (x, y): uniform noise in
    [-1, 1] per pixel, smoothed by a Gaussian of ELASTIC_SIGMA, times alpha."""
    noise = torch.rand(n * 2, 1, h, w, generator=g) * 2 - 1
    k = _gaussian_kernel(ELASTIC_SIGMA)
    r = k.numel() // 2
    smooth = F.conv2d(F.conv2d(noise, k.view(1, 1, 1, -1), padding=(0, r)),
                      k.view(1, 1, -1, 1), padding=(r, 0))
    return (alpha * smooth).view(n, 2, h, w).permute(0, 2, 3, 1)


def random_warp(x: torch.Tensor, aug: Augment, g: torch.Generator) -> torch.Tensor:
    """Apply an independent random affine transform, then (if `aug.elastic`) an elastic
    distortion, to each image of x [N, 1, H, W] in [0, 1]: one resampling for both.

    The parameters are drawn on the CPU from `g` so results are the same on every device; the
    elastic field is drawn after the affine parameters, and only when it is on, so runs without
    it draw what they drew before it existed. Zero padding is black, the MNIST background,
    which is why this runs before normalising.
    """
    n, _, h, w = x.shape

    def uniform(half_width: float) -> torch.Tensor:
        return (torch.rand(n, generator=g) * 2 - 1) * half_width

    angle = uniform(math.radians(aug.rotate))
    shear = uniform(math.radians(aug.shear))
    zoom = 1 + uniform(aug.scale)
    cos, sin, tan = angle.cos(), angle.sin(), shear.tan()
    # theta maps output to input coordinates; all ranges are symmetric, so drawing the inverse
    # transform directly gives the same distribution (up to the zoom's 1/s, which is harmless).
    theta = torch.empty(n, 2, 3)
    theta[:, 0, 0] = cos / zoom
    theta[:, 0, 1] = (cos * tan - sin) / zoom
    theta[:, 1, 0] = sin / zoom
    theta[:, 1, 1] = (sin * tan + cos) / zoom
    theta[:, 0, 2] = uniform(2 * aug.translate)  # normalised coordinates span [-1, 1]: width 2
    theta[:, 1, 2] = uniform(2 * aug.translate)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if aug.elastic:
        # grid coordinates span [-1, 1] over the side: a pixel is 2 / side
        grid = grid + elastic_field(n, h, w, aug.elastic, g) * torch.tensor([2 / w, 2 / h])
    grid = grid.to(x.device, x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def pixels(images: torch.Tensor, aug: Augment | None = None,
           g: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [N, H, W] -> float pixels in [0, 1], [N, 1, H, W], augmented when `aug` is active.

    Apart from `prepare`, for what works in pixel space: adversarial training attacks here.
    """
    x = images.unsqueeze(1).float().div_(255)
    if aug is not None and aug.active:
        x = random_warp(x, aug, g if g is not None else torch.default_generator)
    return x


def prepare(images: torch.Tensor, stats: InputStats, aug: Augment | None = None,
            g: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [N, H, W] -> normalised float [N, 1, H, W], augmented when `aug` is active.

    The result is channels-last, the layout the models run in (see train.py).
    """
    return stats.standardise(pixels(images, aug, g)).contiguous(memory_format=torch.channels_last)
