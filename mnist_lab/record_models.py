"""The records study's models: the most accuracy per parameter (studies/records.toml).

Each is a `SeparableNet`: one full 3x3 convolution on the input, then depthwise-separable 3x3
blocks (a per-channel 3x3 filter, then a 1x1 mix), batch norm and ReLU after each, one max-pool,
global average pooling and a linear head. A separable block of c -> d channels costs 9c + cd
parameters against 9cd for a full convolution, so the same budget buys several times the width.
Convolutions are unpadded, as in the compact CNN: the 26x26 and 24x24 layers are where the FLOPs
are, and they stay narrow.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model

POOL = "M"  # a 2x2 max-pool in a plan


def _separable(cin: int, cout: int) -> list[nn.Module]:
    """Depthwise 3x3, pointwise 1x1, batch norm, ReLU (no biases: BN follows)."""
    return [nn.Conv2d(cin, cin, 3, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU()]


class SeparableNet(nn.Module):
    """`plan`: the stem's width, then a width per separable block, POOL where a pool goes."""

    def __init__(self, plan: tuple[int | str, ...], num_classes: int = 10):
        super().__init__()
        stem, *rest = plan
        layers: list[nn.Module] = [nn.Conv2d(1, stem, 3, bias=False), nn.BatchNorm2d(stem),
                                   nn.ReLU()]
        width = stem
        for step in rest:
            if step == POOL:
                layers.append(nn.MaxPool2d(2))
            else:
                layers += _separable(width, int(step))
                width = int(step)
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(source="records study: <= 4,000 parameters")
def sep_4k(num_classes: int = 10) -> nn.Module:
    """Stem 16, separable 24, pool, separable 32, 32: 3,506 parameters."""
    return SeparableNet((16, 24, POOL, 32, 32), num_classes)


@register_model(source="records study: <= 2,000 parameters")
def sep_2k(num_classes: int = 10) -> nn.Module:
    """Stem 8, separable 16, pool, separable 24, 24: 1,986 parameters."""
    return SeparableNet((8, 16, POOL, 24, 24), num_classes)


@register_model(source="records study: <= 1,000 parameters")
def sep_1k(num_classes: int = 10) -> nn.Module:
    """Stem 6, separable 10, pool, separable 14, 14: 958 parameters."""
    return SeparableNet((6, 10, POOL, 14, 14), num_classes)
