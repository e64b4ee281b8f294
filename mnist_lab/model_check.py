"""What every torch model must do to train, evaluate and export here, checked in one place.

[N, 1, 28, 28] in, [N, 10] finite logits out; cross-entropy's backward reaches every trainable
parameter with a finite gradient; some parameters to train; one image in eval mode (what
`predict` and `serve` do); and a second build that takes the first's weights (how a checkpoint
is loaded). The registry's tests and `mnist-lab models check` run the same checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

BATCH, CLASSES = 4, 10
IMAGE = (1, 28, 28)


@dataclass(frozen=True)
class Check:
    """One check's outcome, and what it saw."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


def _shape(t: torch.Tensor) -> str:
    return str(list(t.shape))


def _output(model: nn.Module, x: torch.Tensor, seen: dict) -> tuple[bool, str]:
    out = model.train()(x)
    if not isinstance(out, torch.Tensor):
        return False, f"returned a {type(out).__name__}, not a tensor"
    seen["out"] = out
    want = [len(x), CLASSES]
    ok = list(out.shape) == want
    return ok, f"{_shape(x)} -> {_shape(out)}" + ("" if ok else f", want {want} (logits)")


def _finite(seen: dict) -> tuple[bool, str]:
    if "out" not in seen:
        return False, "no output to check"
    bad = int((~torch.isfinite(seen["out"])).sum())
    return bad == 0, "no NaN or infinity" if not bad else f"{bad} NaN or infinite values"


def _backward(model: nn.Module, seen: dict) -> tuple[bool, str]:
    out = seen.get("out")
    if out is None or list(out.shape) != [BATCH, CLASSES]:
        return False, f"skipped: needs the [{BATCH}, {CLASSES}] output"
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(out.float(), torch.arange(BATCH)).backward()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in named if p.grad is None]
    bad = [n for n, p in named if p.grad is not None and not torch.isfinite(p.grad).all()]
    if missing:  # a layer the forward never uses: it would never train
        return False, f"no gradient for {', '.join(missing[:3])}" + ("..." if missing[3:] else "")
    if bad:
        return False, f"NaN or infinite gradient in {', '.join(bad[:3])}"
    return True, f"cross-entropy: finite gradients on all {len(named)} parameter tensors"


def _params(model: nn.Module, expected: tuple[int, int] | None) -> tuple[bool, str]:
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n == 0:
        return False, "0 trainable: nothing to train"
    if expected is not None and not expected[0] <= n <= expected[1]:
        return False, f"{n:,} trainable, want {expected[0]:,} to {expected[1]:,}"
    return True, f"{n:,} trainable"


def _one_image(model: nn.Module, x: torch.Tensor) -> tuple[bool, str]:
    with torch.no_grad():
        out = model.eval()(x[:1])
    want = [1, CLASSES]
    ok = isinstance(out, torch.Tensor) and list(out.shape) == want
    got = _shape(out) if isinstance(out, torch.Tensor) else type(out).__name__
    return ok, f"eval mode: {_shape(x[:1])} -> {got}" + ("" if ok else f", want {want}")


def _rebuild(model: nn.Module, build: Callable[[], nn.Module]) -> tuple[bool, str]:
    build().load_state_dict(model.state_dict())  # strict: same names, same shapes
    return True, "a second build loads the first's weights (as a checkpoint is loaded)"


def check_model(build: Callable[[], nn.Module],
                expected_params: tuple[int, int] | None = None) -> list[Check]:
    """Build the model (its errors propagate) and run every check on it, in order; a check
    that raises fails with the error's first line."""
    torch.manual_seed(0)
    model = build()
    x, seen = torch.randn(BATCH, *IMAGE), {}
    steps: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
        ("output shape", lambda: _output(model, x, seen)),
        ("finite output", lambda: _finite(seen)),
        ("backward", lambda: _backward(model, seen)),
        ("parameters", lambda: _params(model, expected_params)),
        ("one image", lambda: _one_image(model, x)),
        ("rebuild", lambda: _rebuild(model, build)),
    ]
    checks = []
    for name, step in steps:
        try:
            ok, detail = step()
        except Exception as e:  # noqa: BLE001 - the model's own error is the check's finding
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            ok, detail = False, f"raised {type(e).__name__}: {first}".rstrip(": ")
        checks.append(Check(name, ok, detail))
    return checks
