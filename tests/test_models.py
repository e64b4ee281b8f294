"""Every registered model passes model_check (shape, backward, finiteness, a rebuild) with its
parameter count in its stated range."""

import re

import numpy as np
import pytest
import torch

from mnist_lab.config import TrainConfig
from mnist_lab.data import InputStats
from mnist_lab.errors import UserError
from mnist_lab.model_check import check_model
from mnist_lab.models import (
    Standardised,
    build_model,
    count_params,
    create_model,
    forward_mflops,
    list_models,
    model_entry,
)
from mnist_lab.record_models import PlanNet

# Sizes the reference studies state as ranges; any other model states its exact count in its
# docstring's first line ("...: 3,506 parameters."), and is held to that.
PARAM_RANGES = {
    "softmax": (7850, 7850),
    "mlp": (100_000, 300_000),
    "fcnn": (200_000, 800_000),
    "cnn": (100_000, 1_000_000),
    "simple_cnn": (100_000, 1_000_000),
    "cnn_aug": (1_500_000, 1_700_000),
    "pytorch_example": (1_199_882, 1_199_882),
    "compact_step1": (9_500, 10_000),
    "compact_step2": (7_000, 7_999),
    "compact_step3": (7_000, 7_999),
    "overparam_cnn": (1_000_000, 10_000_000),
}


def stated_range(name: str) -> tuple[int, int] | None:
    """The range above, else the count in the builder's docstring, else None."""
    if name in PARAM_RANGES:
        return PARAM_RANGES[name]
    first_line = (model_entry(name).build.__doc__ or "").split("\n")[0]
    found = re.search(r"([\d,]+) parameters", first_line)
    return (int(found[1].replace(",", "")),) * 2 if found else None


def test_every_model_states_its_size():
    assert [n for n in list_models("torch") if stated_range(n) is None] == []


@pytest.mark.parametrize("name", list_models("torch"))
def test_torch_model(name):
    checks = check_model(lambda: create_model(name), stated_range(name))
    assert [c.name for c in checks if not c.ok] == [], checks


def test_check_model_finds_what_is_wrong():
    def five_classes():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 5))

    class Spare(torch.nn.Module):  # a layer forward never uses: it would never train
        def __init__(self):
            super().__init__()
            self.net, self.spare = create_model("softmax"), torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.net(x)

    def unused_layer():
        return Spare()

    def nan():
        model = create_model("softmax")
        torch.nn.init.constant_(model[1].bias, float("nan"))
        return model

    failed = {f.__name__: [c.name for c in check_model(f) if not c.ok]
              for f in (five_classes, unused_layer, nan)}
    assert failed == {"five_classes": ["output shape", "backward", "one image"],
                      "unused_layer": ["backward"], "nan": ["finite output", "backward"]}
    [params] = [c for c in check_model(lambda: create_model("softmax"), (1, 10)) if not c.ok]
    assert params.detail == "7,850 trainable, want 1 to 10"


def test_step2_and_step3_are_under_8k_and_smaller_than_step1():
    sizes = [count_params(create_model(f"compact_step{i}")) for i in (1, 2, 3)]
    assert sizes[0] > sizes[1] > sizes[2] and sizes[1] < 8000


@pytest.mark.parametrize("name", list_models("classical"))
def test_classical_model_fits(name):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 784)), np.arange(200) % 10
    x[np.arange(200), y] += 5  # a learnable signal
    model = create_model(name).fit(x, y)
    assert (model.predict(x) == y).mean() > 0.9


def test_unknown_model_and_bad_argument():
    with pytest.raises(UserError, match="unknown model 'resnet'"):
        create_model("resnet")
    with pytest.raises(UserError, match="bad argument"):
        create_model("softmax", hidden=3)


def test_build_model_passes_dropout_and_seed():
    mlp = build_model(TrainConfig(model="mlp", dropout=0.3))
    assert [m.p for m in mlp.modules() if isinstance(m, torch.nn.Dropout)] == [0.3]
    assert build_model(TrainConfig(model="random_forest", seed=4)).random_state == 4
    with pytest.raises(UserError, match="model 'softmax' has no dropout to set"):
        build_model(TrainConfig(model="softmax", dropout=0.3))


def test_standardised_takes_raw_pixels():
    torch.manual_seed(0)
    model, x = create_model("softmax"), torch.rand(3, 1, 28, 28)
    net = Standardised.of(model, TrainConfig(model="softmax"))
    assert net.stats == InputStats(0.1307, 0.3081) and not net.model.training
    assert torch.allclose(net(x), model((x - 0.1307) / 0.3081))
    raw = Standardised.of(model, TrainConfig(model="softmax", normalize=False))
    assert torch.equal(raw(x), model(x))


def test_forward_mflops_counts_a_known_model():
    # softmax regression: one 784 x 10 matrix product = 2 * 784 * 10 FLOPs per image
    assert forward_mflops(create_model("softmax")) == pytest.approx(2 * 784 * 10 / 1e6)
    # a depthwise-separable block costs less than the full convolution it replaces
    assert forward_mflops(create_model("sep_4k")) < forward_mflops(create_model("compact_step3"))


def test_a_shared_block_counts_its_convolution_once():
    # one more application of the shared separable block adds only its batch norm (2 x 16)
    three, four = PlanNet("c8 M s16 r16x3"), PlanNet("c8 M s16 r16x4")
    assert count_params(four) - count_params(three) == 32
    assert count_params(three) == count_params(create_model("shared_1k")) == 986
    assert four(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="keeps the width"):
        PlanNet("c8 M s16 r12x3")
