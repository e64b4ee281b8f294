"""L∞ white-box attacks (FGSM, PGD) written with autograd, and accuracy under them.

Attacks work in pixel space: the model takes raw pixels in [0, 1], [N, 1, 28, 28], and returns
logits (a `models.Standardised`, normalisation inside), so ε is the same budget for every
model whatever standardisation it trained with; ε = 0.3 is Madry et al.'s MNIST threat model.

Gradients are taken with `torch.autograd.grad` with respect to the input alone: parameters'
`.grad` are never touched, so an attack may run in the middle of a training step. Autograd
cannot be switched back on inside `torch.inference_mode()`, so callers must not be in it
(`torch.no_grad()` is fine: the attacks re-enable gradients themselves).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..errors import UserError

Attack = Callable[..., torch.Tensor]
ATTACKS: dict[str, Attack] = {}

# Attack batch: the backward pass keeps every activation; on one CPU core (compact_step3, PGD)
# batches of 64 to 256 cost the same per image, 500 to 1,000 ~1.7x more (out of the caches).
ATTACK_BATCH = 256


def register_attack(fn: Attack) -> Attack:
    """Decorator: add an attack to ATTACKS under its function name."""
    ATTACKS[fn.__name__] = fn
    return fn


def _check_autograd() -> None:
    if torch.is_inference_mode_enabled():
        raise RuntimeError("attacks need autograd: call them outside torch.inference_mode()")


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the cross-entropy with respect to the input x only."""
    _check_autograd()
    # clone: x may be an inference tensor (made under inference_mode), which cannot need grad
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        # A sum, not a mean: only the gradient's sign is used, and a sum's does not vanish
        # into float32 underflow on large batches.
        loss = F.cross_entropy(model(x).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Back into the ε-ball around x, then into the valid pixel range [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0, 1)


@register_attack
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one step of ε along the sign."""
    x = x.detach()
    return (x + eps * input_gradient(model, x, y).sign()).clamp_(0, 1)


@register_attack
def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 40,
        step_size: float | None = None, generator: torch.Generator | None = None,
        random_start: bool = True) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018): uniform random start in the ε-ball,
    `steps` sign-gradient steps, each projected back into the ball and into [0, 1].

    step_size defaults to 2.5·ε/steps (the rule of thumb of the Madry lab's `robustness`
    library): the steps add up to 2.5ε, more than the ball's 2ε diameter, so the walk can
    reach any corner from any start, and the rule holds when `steps` changes; a fixed ε/16
    could not cross the ball in 7 steps. The random start is drawn on the CPU from
    `generator`, so an attack is the same on every device and reproducible from a seed.
    """
    x = x.detach()
    alpha = 2.5 * eps / steps if step_size is None else step_size
    x_adv = x
    if random_start and eps > 0:
        noise = torch.rand(x.shape, generator=generator) * 2 - 1
        x_adv = (x + eps * noise.to(x.device, x.dtype)).clamp_(0, 1)
    for _ in range(steps):
        x_adv = _project(x_adv + alpha * input_gradient(model, x_adv, y).sign(), x, eps)
    return x_adv


def attack_named(name: str) -> Attack:
    """The registered attack `name`, or a UserError naming the choices."""
    if name not in ATTACKS:
        raise UserError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    return ATTACKS[name]


def run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
               **options) -> torch.Tensor:
    """Attack `name` with those of the options it takes (fgsm takes neither steps nor a
    generator), so every caller can treat the attacks alike."""
    fn = attack_named(name)
    params = inspect.signature(fn).parameters
    return fn(model, x, y, eps, **{k: v for k, v in options.items() if k in params})


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode with no parameter gradients; every module's mode and every
    parameter's requires_grad are put back afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    needs = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in needs:
        p.requires_grad_(False)  # no graph is kept for the weights: less memory and work
    try:
        yield model
    finally:
        for p, flag in needs:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.train(mode)


def as_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W] or float [N, (1,) H, W] in [0, 1] -> float [N, 1, H, W] in [0, 1]."""
    x = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    return x.unsqueeze(1) if x.ndim == 3 else x


def robust_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: str,
                    eps_list: Sequence[float], batch: int = ATTACK_BATCH, steps: int = 40,
                    seed: int = 0, progress: bool = False) -> dict[float, float]:
    """Accuracy under `attack` at each ε, {ε: accuracy}; ε = 0 is clean accuracy exactly.

    The model takes pixels in [0, 1] (see the module docstring) and runs in eval mode on its
    parameters' device. Each ε starts from a generator seeded with `seed`, so its figure does
    not depend on the other ε in the list.
    """
    attack_named(attack)  # an unknown name: fail before any work
    device = next(model.parameters()).device
    x_all, y_all = as_pixels(images), labels.long()
    results: dict[float, float] = {}
    with frozen(model), tqdm(total=len(eps_list) * len(y_all), disable=not progress,
                             desc=attack, unit="img", leave=False) as bar:
        for eps in eps_list:
            gen, correct = torch.Generator().manual_seed(seed), 0
            for i in range(0, len(y_all), batch):
                x, y = x_all[i:i + batch].to(device), y_all[i:i + batch].to(device)
                if eps > 0:  # ε = 0: the clean images, no attack and no random start
                    x = run_attack(attack, model, x, y, eps, steps=steps, generator=gen)
                with torch.no_grad():
                    correct += int((model(x).argmax(1) == y).sum())
                bar.update(len(y))
            results[float(eps)] = correct / len(y_all)
    return results
