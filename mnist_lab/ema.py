"""An exponential moving average of a model's weights, evaluated in its place (TrainConfig.ema).

While the learning rate is high, the last step's weights bounce around the valley they train
in; an average over the last ~1 / (1 - decay) steps sits nearer its floor, so it scores the
accuracy of a later epoch earlier. At the end of a one-cycle schedule, whose annealing already
averages the last steps, it measured level with the last weights (docs/PERFORMANCE.md). Batch
norm's running statistics are averaged with the weights, as timm's ModelEmaV2 does, so the
averaged net normalises with statistics of roughly its own weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """An averaged copy of a model, updated after every optimiser step; `model` is the copy."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0
        # float tensors are averaged, the rest (batch norm's step counters) copied
        mine, theirs = self.model.state_dict().values(), model.state_dict().values()
        pairs = list(zip(mine, theirs, strict=True))
        self._averaged = [(a, s) for a, s in pairs if a.is_floating_point()]
        self._copied = [(a, s) for a, s in pairs if not a.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the trained model's current weights and statistics."""
        self.updates += 1
        # Early on the average would be mostly the random initialisation (0.999 ** 469 = 0.63
        # after a whole epoch of MNIST at batch 128), so the decay warms up as in TensorFlow's
        # ExponentialMovingAverage(num_updates): 0.18, 0.25, 0.31, ... until it reaches `decay`.
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averaged, source = zip(*self._averaged, strict=True)
        torch._foreach_lerp_(list(averaged), list(source), 1.0 - decay)
        for a, s in self._copied:
            a.copy_(s)

    def state_dict(self) -> dict:
        """The average and its update count, for a snapshot."""
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() returned."""
        self.model.load_state_dict(state["model"])
        self.updates = state["updates"]
