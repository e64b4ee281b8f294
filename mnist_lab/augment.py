"""Whole-batch preprocessing: uint8 -> float, seeded random affine augmentation, standardisation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data import InputStats


@dataclass(frozen=True)
class Augment:
    """Ranges of the random affine transform; all zero means no augmentation."""

    rotate: float = 0.0  # max rotation, degrees (uniform in ±rotate)
    translate: float = 0.0  # max shift as a fraction of the image side (uniform in ±translate)
    scale: float = 0.0  # max relative zoom (uniform in 1 ± scale)
    shear: float = 0.0  # max shear angle, degrees

    @property
    def active(self) -> bool:
        """Whether any transform is switched on."""
        return any((self.rotate, self.translate, self.scale, self.shear))


def random_affine(x: torch.Tensor, aug: Augment, g: torch.Generator) -> torch.Tensor:
    """Apply an independent random affine transform to each image of x [N, 1, H, W] in [0, 1].

    The parameters are drawn on the CPU from `g` so results are the same on every device.
    Zero padding is black, the MNIST background, which is why this runs before normalising.
    """
    n = x.shape[0]

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
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def pixels(images: torch.Tensor, aug: Augment | None = None,
           g: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [N, H, W] -> float pixels in [0, 1], [N, 1, H, W], augmented when `aug` is active.

    Apart from `prepare`, for what works in pixel space: adversarial training attacks here.
    """
    x = images.unsqueeze(1).float().div_(255)
    if aug is not None and aug.active:
        x = random_affine(x, aug, g if g is not None else torch.default_generator)
    return x


def prepare(images: torch.Tensor, stats: InputStats, aug: Augment | None = None,
            g: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [N, H, W] -> normalised float [N, 1, H, W], augmented when `aug` is active.

    The result is channels-last, the layout the models run in (see train.py).
    """
    return stats.standardise(pixels(images, aug, g)).contiguous(memory_format=torch.channels_last)
