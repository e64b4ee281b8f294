"""The records study's models: the most accuracy per parameter (studies/records.toml).

Each is a `PlanNet`, spelled as a plan of layers: a full 3x3 convolution on the input, then
either depthwise-separable 3x3 blocks (sep_*: a per-channel 3x3 filter and a 1x1 mix, 9c + cd
parameters for c -> d channels against 9cd, so the budget buys width) or full convolutions in the
compact CNN's shape (conv_*), one max-pool, global average pooling and a linear head; batch norm
and ReLU after every convolution. Convolutions are unpadded, as in the compact CNN: the 26x26
and 24x24 layers are where the FLOPs are, and they stay narrow. At 1,000 parameters a layer of
its own costs too much width, so shared_* apply one separable block several times.

The single-model block's `strided_cnn` is the one exception: Deotte's Kaggle net, two stages of
convolutions that downsample with a strided 5x5 instead of pooling, and dropout.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model


class SharedSeparable(nn.Module):
    """One padded separable 3x3 convolution applied `times` times with the same weights, each
    application with its own batch norm and a residual connection before the ReLU.

    Depth for free in parameters: the convolution's 9c + c^2 weights are counted once, only
    the 2c of each batch norm again (ruslangrimov/mnist-minimal-model's 1,936-parameter net
    shares one separable convolution three times, its BN-free normalisation aside).
    """

    def __init__(self, width: int, times: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),
                                  nn.Conv2d(width, width, 1, bias=False))
        self.norms = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(times))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm in self.norms:
            x = torch.relu(x + norm(self.conv(x)))
        return x


def _layer(word: str, width: int) -> tuple[list[nn.Module], int]:
    """One word of a plan ("c8", "s16", "t4", "M", "r16x3") as layers, and the width after."""
    if word == "M":
        return [nn.MaxPool2d(2)], width
    if word[0] == "r":  # rNxK: a shared separable block at width N, applied K times
        out, times = (int(n) for n in word[1:].split("x"))
        if out != width:
            raise ValueError(f"plan word {word!r}: a shared block keeps the width ({width})")
        return [SharedSeparable(width, times)], width
    kind, out = word[0], int(word[1:])
    if kind == "s":  # depthwise 3x3, then a 1x1 mix: 9c + cd weights instead of 9cd
        convs = [nn.Conv2d(width, width, 3, groups=width, bias=False),
                 nn.Conv2d(width, out, 1, bias=False)]
    elif kind in "ct":  # a full 3x3 convolution, or a 1x1 transition
        convs = [nn.Conv2d(width, out, 3 if kind == "c" else 1, bias=False)]
    else:
        raise ValueError(f"plan word {word!r}: use cN, sN, tN, rNxK or M")
    # no conv biases: BN follows; ReLU in place, as the compact CNN's (models._block)
    return [*convs, nn.BatchNorm2d(out), nn.ReLU(inplace=True)], out


class PlanNet(nn.Module):
    """Layers spelled as words: cN full 3x3 conv, sN separable 3x3, tN 1x1, M max-pool, rNxK a
    shared separable block applied K times; then global average pooling and a linear head.
    Every conv but the shared block's is unpadded; each is followed by BN and ReLU."""

    def __init__(self, plan: str, num_classes: int = 10):
        super().__init__()
        layers, width = [], 1
        for word in plan.split():
            more, width = _layer(word, width)
            layers += more
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _stage(c_in: int, c: int, dropout: float) -> list[nn.Module]:
    """Two unpadded 3x3 convolutions, then a strided 5x5 in place of pooling, each followed by
    ReLU and then batch norm (the Keras original's order); dropout at the end."""
    convs = [nn.Conv2d(c_in, c, 3), nn.Conv2d(c, c, 3), nn.Conv2d(c, c, 5, stride=2, padding=2)]
    return [m for conv in convs for m in (conv, nn.ReLU(), nn.BatchNorm2d(c))] + [
        nn.Dropout(dropout)]


@register_model(source="records study: single model; Deotte's Kaggle MNIST net (2018)")
def strided_cnn(dropout: float = 0.4, num_classes: int = 10) -> nn.Module:
    """32-32-32s2, 64-64-64s2, 128 (4x4), dropout 0.4: 326,410 parameters."""
    return nn.Sequential(*_stage(1, 32, dropout), *_stage(32, 64, dropout),
                         nn.Conv2d(64, 128, 4), nn.ReLU(), nn.BatchNorm2d(128), nn.Flatten(),
                         nn.Dropout(dropout), nn.Linear(128, num_classes))


@register_model(source="records study: <= 4,000 parameters, separable")
def sep_4k(num_classes: int = 10) -> nn.Module:
    """c16 s24 M s32 s32: 3,506 parameters."""
    return PlanNet("c16 s24 M s32 s32", num_classes)


@register_model(source="records study: <= 2,000 parameters, separable")
def sep_2k(num_classes: int = 10) -> nn.Module:
    """c8 s16 M s24 s24: 1,986 parameters."""
    return PlanNet("c8 s16 M s24 s24", num_classes)


@register_model(source="records study: <= 1,000 parameters, separable")
def sep_1k(num_classes: int = 10) -> nn.Module:
    """c6 s10 M s14 s14: 958 parameters."""
    return PlanNet("c6 s10 M s14 s14", num_classes)


@register_model(source="records study: <= 4,000 parameters, full convolutions")
def conv_4k(num_classes: int = 10) -> nn.Module:
    """c6 c12 M t6 c11 c12 c11 (the compact CNN's shape at ~0.7 width): 3,980 parameters."""
    return PlanNet("c6 c12 M t6 c11 c12 c11", num_classes)


@register_model(source="records study: <= 2,000 parameters, full convolutions")
def conv_2k(num_classes: int = 10) -> nn.Module:
    """c4 c8 M t4 c8 c8 c8 (the compact CNN's shape, halved): 1,966 parameters."""
    return PlanNet("c4 c8 M t4 c8 c8 c8", num_classes)


@register_model(source="records study: <= 1,000 parameters, full convolutions")
def conv_1k(num_classes: int = 10) -> nn.Module:
    """c3 c5 M t3 c5 c5 c6: 931 parameters."""
    return PlanNet("c3 c5 M t3 c5 c5 c6", num_classes)


@register_model(source="records study: <= 1,000 parameters, one separable block shared 3 times")
def shared_1k(num_classes: int = 10) -> nn.Module:
    """c8 M s16 r16x3: 986 parameters, depth from one separable block's weights used thrice."""
    return PlanNet("c8 M s16 r16x3", num_classes)


@register_model(source="records study: <= 1,000 parameters, one separable block shared 4 times")
def shared_1k_deep(num_classes: int = 10) -> nn.Module:
    """c8 M s15 r15x4: 950 parameters, narrower than shared_1k for one application more."""
    return PlanNet("c8 M s15 r15x4", num_classes)
