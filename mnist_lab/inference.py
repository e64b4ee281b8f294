"""Classify MNIST-style images with a stored checkpoint: the one path `predict`, `serve` and
`export` share, so a digit gets the same answer from the CLI, the web page and the API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .models import Standardised
from .store import load_checkpoint


class Classifier:
    """A checkpoint loaded for inference (CPU, eval mode, no gradients)."""

    def __init__(self, checkpoint: str | Path):
        model, self.cfg = load_checkpoint(checkpoint)
        self.checkpoint = str(checkpoint)
        self.net = Standardised.of(model.cpu(), self.cfg)

    @torch.inference_mode()
    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, 28, 28] white-on-black digits -> class probabilities [N, classes]."""
        x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).float().div(255)
        return torch.softmax(self.net(x).float(), dim=1).numpy()
