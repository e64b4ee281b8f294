"""Model zoo: every model of the reference studies, behind one registry.

`create_model(name, **kw)` builds a model, `list_models()` names them. Torch models take
[N, 1, 28, 28] normalised images and return [N, 10] logits (or log-probabilities, see
`cnn_aug`); classical models are scikit-learn estimators on flattened pixels. Besides the zoo,
a name may be an installed package's model or `path/to/file.py:Name` (user_models.py).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import TrainConfig
from .data import InputStats, input_stats
from .registry import (  # noqa: F401 - the registry's API, imported from here by the package
    ModelEntry,
    build_model,
    count_params,
    create_model,
    list_models,
    model_builder,
    model_entry,
    register_model,
)


def forward_mflops(model: nn.Module) -> float:
    """FLOPs of one forward pass on one 28x28 image, in millions (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 1, 28, 28))
    return counter.get_total_flops() / 1e6


class Standardised(nn.Module):
    """A model that takes raw pixels in [0, 1], [N, 1, 28, 28], and returns logits: what
    inference and export use, with the training standardisation inside."""

    def __init__(self, model: nn.Module, stats: InputStats):
        super().__init__()
        self.model, self.stats = model.eval(), stats

    @classmethod
    def of(cls, model: nn.Module, cfg: TrainConfig) -> Standardised:
        """The model with the standardisation its config trained it with."""
        return cls(model, input_stats(cfg.dataset, cfg.normalize))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise as in training, then run the model."""
        return self.model(self.stats.standardise(x))


# ---------------------------------------------------------------- linear and fully connected

@register_model(source="linear-mlp: softmax regression")
def softmax(num_classes: int = 10) -> nn.Module:
    """Softmax (multinomial logistic) regression on raw pixels: 7,850 parameters."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))


@register_model(source="linear-mlp: 2-layer MLP")
def mlp(hidden: int = 256, dropout: float = 0.0, num_classes: int = 10) -> nn.Module:
    """Two-layer perceptron 784 -> hidden -> 10."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))


@register_model(source="model-comparison: FCNN")
def fcnn(dropout: float = 0.2, num_classes: int = 10) -> nn.Module:
    """Fully connected network 784 -> 512 -> 256 -> 10 with dropout."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(512, 256), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(256, num_classes))


# ---------------------------------------------------------------- plain CNNs

def _conv_relu_pool(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]


@register_model(source="model-comparison: CNN")
def cnn(num_classes: int = 10) -> nn.Module:
    """One conv layer (32 channels) + pool, then FC 128: the comparison study's CNN."""
    return nn.Sequential(*_conv_relu_pool(1, 32), nn.Flatten(),
                         nn.Linear(32 * 14 * 14, 128), nn.ReLU(), nn.Linear(128, num_classes))


@register_model(source="model-comparison: simple CNN (one more conv + pool)")
def simple_cnn(num_classes: int = 10) -> nn.Module:
    """`cnn` with a second conv layer (64 channels) followed by pooling."""
    return nn.Sequential(*_conv_relu_pool(1, 32), *_conv_relu_pool(32, 64), nn.Flatten(),
                         nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, num_classes))


@register_model(source="augmentation report: 32->64 conv + FC128, LogSoftmax/NLL")
def cnn_aug(num_classes: int = 10) -> nn.Module:
    """Conv 32 -> conv 64 -> pool -> FC 128 -> LogSoftmax.

    It outputs log-probabilities; cross-entropy on them equals NLL (log_softmax is idempotent),
    so it trains with the same loss as every other model.
    """
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 14 * 14, 128), nn.ReLU(),
                         nn.Linear(128, num_classes), nn.LogSoftmax(dim=1))


@register_model(source="pytorch/examples mnist (reference-size CNN, ~1.2M params)")
def pytorch_example(num_classes: int = 10) -> nn.Module:
    """The CNN of pytorch/examples/mnist: two 3x3 convs, pool, dropout, FC 128."""
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
                         nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(128, num_classes))


# ---------------------------------------------------------------- compact CNNs (three steps)

def _block(cin: int, cout: int, k: int, dropout: float, padding: int = 0) -> nn.Sequential:
    # ReLU in place: batch norm's backward needs its input, not its output, and on CPU a
    # fresh tensor per activation is memory traffic these small nets are bound by
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=padding, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.Dropout(dropout))


class CompactCNN(nn.Module):
    """Unpadded 3x3 conv blocks (BN, ReLU, dropout), one pool, a 1x1 transition, GAP head.

    28 -> 26 -> 24 -> pool 12 -> 1x1 -> 10 -> 8 -> 6 -> GAP -> 1x1 conv to classes. Keeping the
    first layers narrow is what keeps both parameters and FLOPs low: the 24x24 layers dominate.
    """

    def __init__(self, channels: tuple[int, ...], dropout: float = 0.0, num_classes: int = 10):
        super().__init__()
        c1, c2, t, c3, c4, c5 = channels
        self.features = nn.Sequential(
            _block(1, c1, 3, dropout), _block(c1, c2, 3, dropout), nn.MaxPool2d(2),
            _block(c2, t, 1, 0.0), _block(t, c3, 3, dropout), _block(c3, c4, 3, dropout),
            _block(c4, c5, 3, 0.0))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                  nn.Conv2d(c5, num_classes, 1, bias=False), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(source="compact-cnn step 1: basic setup + batch norm (~9.8k)")
def compact_step1(num_classes: int = 10) -> nn.Module:
    """Step 1: wider blocks with batch norm, no dropout: 9,8xx parameters."""
    return CompactCNN((10, 16, 10, 18, 18, 20), 0.0, num_classes)


@register_model(source="compact-cnn step 2: dropout + GAP (~7.5k)")
def compact_step2(dropout: float = 0.05, num_classes: int = 10) -> nn.Module:
    """Step 2: slimmer, dropout after each block, global average pooling: < 8k parameters."""
    return CompactCNN((8, 16, 9, 16, 16, 16), dropout, num_classes)


@register_model(source="compact-cnn step 3: + rotation augmentation + LR schedule (~7.4k)")
def compact_step3(dropout: float = 0.0, num_classes: int = 10) -> nn.Module:
    """Step 3: the step-2 design with a narrower transition: 7,432 parameters.

    No dropout by default: with augmentation this model underfits rather than overfits (train
    and test accuracy meet), and on CPU dropout's random masks cost half of each step's time.
    """
    return CompactCNN((8, 16, 8, 16, 16, 16), dropout, num_classes)


# ---------------------------------------------------------------- the speed presets' CNN

@register_model(source="speed presets (docs/PERFORMANCE.md): pool first, then go wide")
def fast_cnn(c1: int = 16, c2: int = 32, c3: int = 64, num_classes: int = 10) -> nn.Module:
    """5x5 conv, pool, then two wide 3x3 convs and a GAP head: 24,314 parameters (c2=48: 35,866).

    Design for CPU time, not parameters: the one full-resolution layer has a single input
    channel and is pooled at once, so the work sits at 12x12 and 5x5 in 32-64 channels, wide
    enough to fill the AVX2 FMA units. It trains 2.5x the images per second of compact_step3
    on 2 threads (BN after the pool: a quarter of the values to normalise).
    """
    def stage(cin: int, cout: int, k: int, pool: bool) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, k, bias=False), *([nn.MaxPool2d(2)] if pool else []),
                nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]  # in place: as _block
    return nn.Sequential(*stage(1, c1, 5, True), *stage(c1, c2, 3, True),
                         *stage(c2, c3, 3, False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(c3, num_classes))


# ---------------------------------------------------------------- over-parameterised CNN

@register_model(source="weight-decay study: 1->64->128->256, BN, ReLU, two max-pools")
def overparam_cnn(num_classes: int = 10) -> nn.Module:
    """Over-parameterised CNN (~3.6M parameters) for the weight-decay study."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*block(1, 64), *block(64, 128), nn.MaxPool2d(2),
                         *block(128, 256), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(256 * 7 * 7, 256), nn.ReLU(), nn.Linear(256, num_classes))


# ---------------------------------------------------------------- classical (scikit-learn)

@register_model(kind="classical", source="model-comparison: logistic regression")
def logreg(c: float = 1.0, max_iter: int = 100) -> object:
    """Multinomial logistic regression (lbfgs) on normalised pixels; c is sklearn's C."""
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(C=c, max_iter=max_iter, tol=1e-3)


@register_model(kind="classical", source="model-comparison: random forest")
def random_forest(n_estimators: int = 100, seed: int = 0, n_jobs: int = -1) -> object:
    """Random forest of 100 trees on raw pixels."""
    from sklearn.ensemble import RandomForestClassifier
    return RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs)


# Other families register themselves on import; importing them here, last, puts every model in
# the registry whoever imports models.py, with the zoo's names listed first.
from . import record_models  # noqa: E402, F401
