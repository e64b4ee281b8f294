"""Is a robust accuracy real, or are the model's gradients masked? Four checks at one ε.

A model can look robust because its gradients stop pointing at adversarial examples
(saturated or quantised inputs, shattered or noisy gradients), not because none is near:
Athalye et al. 2018, "Obfuscated gradients give a false sense of security". Carlini et al.
2019 ("On evaluating adversarial robustness", §5) list what an honest figure must pass; these
are the four that need no second model, measured on the adversarial suite's images:

- a stronger attack (more steps, random restarts, an image robust only if it survives
  every one) must not lower accuracy much: the suite's PGD had converged;
- an unbounded attack (ε = 1: every image in [0, 1] is reachable) must reach ~0%;
- random sign noise of the same size must hurt far less than PGD: the gradient carries
  what a blind search lacks;
- single-step FGSM must not beat iterative PGD.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .attacks import ATTACK_BATCH, as_pixels, fgsm, frozen, pgd

# How far a check may miss before it is a warning: 1,000 images move accuracy in 0.1 pp
# steps, and two runs of a random-start PGD differ by a few tenths of a point.
CONVERGED_MARGIN = 0.02  # the strong attack may find at most 2 pp more adversarial images
UNBOUNDED_MAX = 0.01  # at ε = 1 at most 1% of the images may survive
MARGIN = 0.01  # PGD must beat noise and FGSM by at least this (or match a 0% floor)


@dataclass(frozen=True)
class MaskingResult:
    """Accuracies under five attacks at one ε, and what they say about masking."""

    eps: float  # the L∞ radius of every check but the unbounded one
    images: int  # how many test images were attacked
    steps: int  # PGD steps of the reference attack (the adversarial suite's)
    strong_steps: int  # PGD steps of the stronger attack
    restarts: int  # random starts of the stronger attack
    pgd: float  # accuracy under PGD, `steps`, one random start
    pgd_strong: float  # under PGD, `strong_steps`, worst of `restarts` random starts
    fgsm: float  # under one FGSM step
    noise: float  # under random ±ε sign noise: no gradient at all
    unbounded: float  # under PGD at ε = 1

    def warnings(self) -> list[str]:
        """Each check that fails, in words; empty when none shows masking."""
        out = []
        if self.pgd - self.pgd_strong > CONVERGED_MARGIN:
            out.append(f"PGD-{self.steps} overstates robustness: {self.strong_steps} steps from "
                       f"{self.restarts} starts leave {100 * self.pgd_strong:.1f}%, not "
                       f"{100 * self.pgd:.1f}%")
        if self.unbounded > UNBOUNDED_MAX:
            out.append(f"an unbounded attack (eps 1) leaves {100 * self.unbounded:.1f}% "
                       "correct: the gradients do not lead the attack")
        if self.pgd > max(self.noise - MARGIN, 0.0):
            out.append(f"PGD ({100 * self.pgd:.1f}%) does no better than random noise "
                       f"({100 * self.noise:.1f}%)")
        if self.fgsm < self.pgd - MARGIN:
            out.append(f"one FGSM step ({100 * self.fgsm:.1f}%) beats PGD "
                       f"({100 * self.pgd:.1f}%)")
        return out


Perturb = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, perturb: Perturb,
             batch: int) -> torch.Tensor:
    """Per image, whether the model still classifies it correctly once perturbed."""
    out = []
    for i in range(0, len(y), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        with torch.no_grad():
            out.append(model(perturb(xb, yb)).argmax(1) == yb)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def _restarted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
               restarts: int, gen: torch.Generator, batch: int) -> torch.Tensor:
    """Correct under every one of `restarts` PGD runs; each restart attacks only the images
    that survived the ones before, so a robust-looking model costs the most."""
    alive = torch.ones(len(y), dtype=torch.bool)
    for _ in range(restarts):
        idx = alive.nonzero().flatten()
        if not len(idx):
            break
        alive[idx] = _correct(model, x[idx], y[idx],
                              lambda a, b: pgd(model, a, b, eps, steps, generator=gen), batch)
    return alive


def check_masking(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float,
                  steps: int = 40, strong_steps: int = 100, restarts: int = 5, seed: int = 0,
                  batch: int = ATTACK_BATCH) -> MaskingResult:
    """The four checks on a model taking pixels in [0, 1] (a `models.Standardised`)."""
    device = next(model.parameters()).device
    x, y = as_pixels(images).to(device), labels.long().to(device)
    gen = torch.Generator().manual_seed(seed)

    def noise(a: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        sign = torch.randint(0, 2, a.shape, generator=gen).to(a.device, a.dtype) * 2 - 1
        return (a + eps * sign).clamp(0, 1)

    def acc(perturb: Perturb) -> float:
        return float(_correct(model, x, y, perturb, batch).float().mean())

    with frozen(model):
        return MaskingResult(
            eps=eps, images=len(y), steps=steps, strong_steps=strong_steps, restarts=restarts,
            pgd=acc(lambda a, b: pgd(model, a, b, eps, steps, generator=gen)),
            pgd_strong=float(_restarted(model, x, y, eps, strong_steps, restarts, gen, batch)
                             .float().mean()),
            fgsm=acc(lambda a, b: fgsm(model, a, b, eps)),
            noise=acc(noise),
            unbounded=acc(lambda a, b: pgd(model, a, b, 1.0, steps, generator=gen)))
