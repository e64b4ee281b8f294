"""Running a model over a split: the device it runs on and its loss, accuracy and predictions.

Training evaluates after every epoch and `mnist-lab evaluate` re-evaluates a checkpoint with the
same function, so the two always agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import pixels, prepare
from .data import InputStats, Split
from .errors import UserError
from .metrics import Epoch
from .tta import views

# Evaluation batch: on CPU a large batch's activations spill out of the caches, and conv nets
# evaluate 1.5-2.8x faster in batches of 64 than of 2,000 (bench/eval_batch.py); GPUs want large.
EVAL_BATCH_CPU, EVAL_BATCH_GPU = 64, 2000


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; an explicit name must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda[:N] or mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise UserError(f"device {name!r} is not available on this machine")
    return device


@dataclass(frozen=True)
class Evaluation:
    """A model's results on one split."""

    loss: float  # mean cross-entropy
    accuracy: float
    predictions: np.ndarray  # predicted class of each image, int64 [N]
    probabilities: np.ndarray  # softmax of the outputs, float32 [N, classes]


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, stats: InputStats,
             device: torch.device, tta: str = "none") -> Evaluation:
    """Loss, accuracy and predictions of the model on a split, in eval mode; with a `tta`
    view set (tta.py), of its softmax averaged over the image and the set's copies."""
    model.eval().to(memory_format=torch.channels_last)
    loss, preds, probs = 0.0, [], []
    batch = EVAL_BATCH_CPU if device.type == "cpu" else EVAL_BATCH_GPU
    for i in range(0, len(split), batch):
        log_p = _log_probabilities(model, split.images[i:i + batch].to(device), stats, tta)
        y = split.labels[i:i + batch].to(device)
        loss += F.nll_loss(log_p, y, reduction="sum").item()
        preds.append(log_p.argmax(1).cpu())
        probs.append(log_p.exp().cpu())
    pred = torch.cat(preds).numpy()
    return Evaluation(loss / len(split), float((pred == split.labels.numpy()).mean()), pred,
                      torch.cat(probs).numpy())


def _log_probabilities(model: nn.Module, images: torch.Tensor, stats: InputStats,
                       tta: str) -> torch.Tensor:
    """Log of the class probabilities of a uint8 batch, averaged over the views if any."""
    if tta == "none":
        return F.log_softmax(model(prepare(images, stats)).float(), 1)
    p = torch.stack([torch.softmax(model(stats.standardise(v).contiguous(
        memory_format=torch.channels_last)).float(), 1) for v in views(pixels(images), tta)])
    return p.mean(0).log()


def weight_norm(model: nn.Module) -> float:
    """L2 norm of all parameters taken together."""
    return float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in model.parameters())))


def measure_epoch(model: nn.Module, val_split: Split | None, test_split: Split,
                  stats: InputStats, device: torch.device, entry: Epoch,
                  clock: dict, tta: str = "none") -> Evaluation:
    """Evaluate a model after an epoch (with the `tta` view set): fill in the entry's
    validation and test loss and accuracy, the gap and the weight norm, add to the clock's eval
    time and images; return the test evaluation."""
    t = time.perf_counter()
    if val_split is not None:
        val = evaluate(model, val_split, stats, device, tta)
        entry.val_loss, entry.val_accuracy = val.loss, val.accuracy
        clock["eval_n"] += len(val_split)
    test = evaluate(model, test_split, stats, device, tta)
    entry.test_loss, entry.test_accuracy = test.loss, test.accuracy
    clock["eval_n"] += len(test_split)
    clock["eval_s"] += time.perf_counter() - t
    entry.gap = entry.train_accuracy - entry.test_accuracy
    entry.weight_norm = weight_norm(model)
    return test
