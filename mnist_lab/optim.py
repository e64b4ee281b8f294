"""Optimisers (a lean SGD, torch's Adam, AdamW, Adadelta) and the pure learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def learning_rate(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Pure schedule: the learning rate for optimiser step `step` (0-based)."""
    if cfg.scheduler == "none":
        return cfg.lr
    if cfg.scheduler == "step":
        return cfg.lr * cfg.gamma ** (step // steps_per_epoch // cfg.step_size)
    t = step / max(1, total_steps - 1)
    if cfg.scheduler == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))
    # onecycle: linear warm-up from lr/25, then cosine annealing to zero. The warm-up lets a
    # high peak rate be used safely; the long anneal is where most accuracy is gained.
    if t < cfg.warmup:
        return cfg.lr * (0.04 + 0.96 * t / cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (t - cfg.warmup) / (1 - cfg.warmup)))


class SGD:
    """torch.optim.SGD's update (momentum, Nesterov, coupled weight decay), nothing else.

    Why not torch.optim.SGD: the first use of any torch.optim optimiser imports TorchDynamo,
    1.7 s of a 15 s time-to-99% run on 2 CPU cores. The arithmetic is torch's, step for step
    (tests/test_train.py checks the two agree).
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"lr": lr}]  # the schedule writes the lr here, as for torch.optim
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
        self.buffers: list[torch.Tensor] | None = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        params = [p for p in self.params if p.grad is not None]
        grads = [p.grad for p in params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum:
            if self.buffers is None:  # first step: the buffer starts as the gradient
                self.buffers = [g.clone() for g in grads]
            else:
                torch._foreach_mul_(self.buffers, self.momentum)
                torch._foreach_add_(self.buffers, grads)
            grads = (torch._foreach_add(grads, self.buffers, alpha=self.momentum)
                     if self.nesterov else self.buffers)
        torch._foreach_add_(params, grads, alpha=-self.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        """The momentum buffers (the lr is set by the schedule every step)."""
        return {"buffers": self.buffers}

    def load_state_dict(self, state: dict) -> None:
        """Restore the momentum buffers, onto the parameters' device."""
        buffers, device = state["buffers"], self.params[0].device
        self.buffers = None if buffers is None else [b.to(device) for b in buffers]


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> SGD | torch.optim.Optimizer:
    """The optimiser the config names; lr is overwritten every step by the schedule."""
    params, wd = model.parameters(), cfg.weight_decay
    if cfg.optimizer == "sgd":
        return SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd,
                   nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=wd)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=wd)
    return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=wd)
