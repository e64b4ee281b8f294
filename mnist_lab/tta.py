"""Test-time augmentation: a model's softmax averaged over fixed transformed copies of an image.

A net trained on rotated and shifted digits has learnt to answer for the whole neighbourhood of
an image, not only for the image; asking it about a few fixed neighbours and averaging is an
ensemble of one model, bought with evaluation time (k views cost k forward passes). The view
sets are few and fixed so that a choice between them is made on a validation hold-out
(bench/tta_views.py), never on the test set.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import TTA_VIEWS

# name -> the copies evaluated beside the image itself: (rotation in degrees, shift right in
# pixels, shift down in pixels). Symmetric, so no direction is favoured.
_ROT5 = ((-5.0, 0.0, 0.0), (5.0, 0.0, 0.0))
_SHIFT1 = ((0.0, 1.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, -1.0))
VIEW_SETS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "none": (),
    "rot5": _ROT5,
    "shift1": _SHIFT1,
    "rot5+shift1": _ROT5 + _SHIFT1,
}
assert tuple(VIEW_SETS) == TTA_VIEWS, "config.TTA_VIEWS names the view sets the CLI offers"


def views(x: torch.Tensor, name: str) -> list[torch.Tensor]:
    """Pixels [N, 1, H, W] -> the image and its fixed copies of view set `name`."""
    n, _, h, w = x.shape
    out = [x]
    for degrees, dx, dy in VIEW_SETS[name]:
        t = math.radians(degrees)
        # affine_grid maps output to input coordinates in [-1, 1]: one pixel is 2 / side
        theta = torch.tensor([[math.cos(t), -math.sin(t), -2 * dx / w],
                              [math.sin(t), math.cos(t), -2 * dy / h]], dtype=x.dtype,
                             device=x.device).expand(n, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out.append(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=False))
    return out
