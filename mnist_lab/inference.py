"""Classify MNIST-style images with a stored checkpoint: the one path `predict`, `serve` and
`export` share, so a digit gets the same answer from the CLI, the web page and the API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .store import Store, load_checkpoint
from .train import input_stats


def best_checkpoint(store: Store) -> str:
    """Path of the stored checkpoint with the highest test accuracy."""
    runs = [r for r in store.runs(status="complete") if r.get("checkpoint")]
    if not runs:
        raise UserError(f"no stored checkpoint in {store.root}; train one or pass --checkpoint")
    return max(runs, key=lambda r: r["test_accuracy"] or 0)["checkpoint"]


class Standardised(nn.Module):
    """A model that takes raw pixels in [0, 1], [N, 1, 28, 28], and returns logits."""

    def __init__(self, model: nn.Module, mean: float, std: float):
        super().__init__()
        self.model, self.mean, self.std = model.eval(), mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise as in training, then run the model."""
        return self.model((x - self.mean) / self.std)


class Classifier:
    """A checkpoint loaded for inference (CPU, eval mode, no gradients)."""

    def __init__(self, checkpoint: str | Path):
        model, self.cfg = load_checkpoint(checkpoint)
        self.checkpoint = str(checkpoint)
        self.net = Standardised(model.cpu(), *input_stats(self.cfg))

    @torch.inference_mode()
    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, 28, 28] white-on-black digits -> class probabilities [N, classes]."""
        x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).float().div(255)
        return torch.softmax(self.net(x).float(), dim=1).numpy()
