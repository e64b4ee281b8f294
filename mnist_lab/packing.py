"""K models of one architecture side by side as one module, and their states apart again.

Every convolution becomes one grouped by member (groups x K), every batch norm one over the
members' channels (its statistics are per channel, so per member), every linear layer a
batched matmul; the input holds the members' batches as channel groups, [B, K*C, H, W]. No
value of one member ever meets another's, so training the pack is training K models; it is
faster only because K narrow layers make one wide enough to fill the vector units.

A layer this file does not know, or a forward that mixes channels (a softmax over dim 1, a
view that reorders them), cannot be packed: `unpackable` says why, and checks numerically
that the pack computes what the members compute.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

_PACKED = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)  # the layers converted
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)


class PackedLinear(nn.Module):
    """K linear layers as one: [B, K*F] -> [B, K*O], member k's features in block k."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]))  # [K,O,F]
        bias = layers[0].bias is not None
        self.bias = (nn.Parameter(torch.stack([m.bias.detach() for m in layers])) if bias
                     else None)  # [K, O]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, o, f = self.weight.shape
        y = torch.bmm(x.reshape(-1, k, f).transpose(0, 1), self.weight.transpose(1, 2))
        y = y.transpose(0, 1)  # [B, K, O]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(-1, k * o)


def _pack_layer(layers: list[nn.Module]) -> nn.Module:
    first, k = layers[0], len(layers)
    if isinstance(first, nn.Linear):
        return PackedLinear(layers)
    if isinstance(first, nn.Conv2d):
        new = nn.Conv2d(k * first.in_channels, k * first.out_channels, first.kernel_size,
                        first.stride, first.padding, first.dilation, k * first.groups,
                        first.bias is not None, first.padding_mode)
    else:  # batch norm
        new = type(first)(k * first.num_features, first.eps, first.momentum, first.affine,
                          first.track_running_stats)
    joined = {name: torch.cat([m.state_dict()[name] for m in layers])
              for name, t in first.state_dict().items() if t.ndim}
    new.load_state_dict(joined | {n: t for n, t in first.state_dict().items() if not t.ndim})
    return new


def pack_model(members: list[nn.Module]) -> nn.Module:
    """One module computing all members: input [B, K*C, H, W], output [B, K*classes]."""
    packed = copy.deepcopy(members[0])
    for name, module in members[0].named_modules():
        if isinstance(module, _PACKED):
            parent, _, child = name.rpartition(".")
            setattr(packed.get_submodule(parent), child,
                    _pack_layer([m.get_submodule(name) for m in members]))
    return packed


def split(packed: torch.Tensor, like: torch.Tensor, k: int, members: int) -> torch.Tensor:
    """Member k's part of a packed tensor shaped like `like` (a member's)."""
    if packed.ndim == 0:  # shared: a batch-norm counter, an optimiser's step
        return packed.clone()
    if packed.ndim == like.ndim + 1:  # stacked (linear layers)
        return packed[k].clone()
    return packed.chunk(members)[k].clone()  # concatenated along dim 0


def join(parts: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The packed tensor shaped like `like` made of the members' parts (split's inverse)."""
    if like.ndim == 0 or parts[0].ndim == 0:  # shared
        return parts[0].clone()
    return torch.stack(parts) if like.ndim == parts[0].ndim + 1 else torch.cat(parts)


def member_state(packed: nn.Module, member: nn.Module, k: int, members: int) -> dict:
    """Member k's state dict, for a model built like `member`."""
    mine, theirs = member.state_dict(), packed.state_dict()
    return {name: split(theirs[name], like, k, members) for name, like in mine.items()}


def packed_state(packed: nn.Module, states: list[dict]) -> dict:
    """The pack's state dict made of the members' (member_state's inverse)."""
    return {name: join([s[name] for s in states], like)
            for name, like in packed.state_dict().items()}


def _opt_tensors(state: dict) -> list[tuple[tuple, int]]:
    """(where a per-parameter tensor sits in an optimiser state, its parameter's index), for
    mnist-lab's SGD ({"buffers": [...]}) and torch.optim's ({"state": {i: {...}}})."""
    if "buffers" in state:
        return [(("buffers", i), i) for i in range(len(state["buffers"] or []))]
    return [(("state", i, name), i) for i, entry in state["state"].items()
            for name, t in entry.items() if isinstance(t, torch.Tensor)]


def _at(state: dict, path: tuple) -> object:
    for step in path:
        state = state[step]
    return state


def _copy(state: dict) -> dict:
    """The state's containers copied, its tensors shared (they are replaced, not changed)."""
    if isinstance(state, dict):
        return {k: _copy(v) for k, v in state.items()}
    return [_copy(v) for v in state] if isinstance(state, list) else state


def member_opt_state(state: dict, likes: list[torch.Tensor], k: int, members: int) -> dict:
    """Member k's optimiser state; `likes` are a member's parameters, in order."""
    out = _copy(state)
    for path, i in _opt_tensors(state):
        _at(out, path[:-1])[path[-1]] = split(_at(state, path), likes[i], k, members)
    return out


def packed_opt_state(states: list[dict], likes: list[torch.Tensor]) -> dict:
    """The pack's optimiser state made of the members' (`likes`: the pack's parameters)."""
    out = _copy(states[0])
    for path, i in _opt_tensors(states[0]):
        _at(out, path[:-1])[path[-1]] = join([_at(s, path) for s in states], likes[i])
    return out


def unpackable(build: Callable[[], nn.Module], members: int) -> str | None:
    """Why models from `build()` cannot train as a pack of `members` (None: they can)."""
    model = build()
    for module in model.modules():
        if isinstance(module, _DROPOUT) and module.p > 0:
            return "dropout draws every member's masks from one random stream"
        own = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
        if own and not isinstance(module, _PACKED):
            return f"its {type(module).__name__} layers cannot be packed"
    return _check_outputs([build() for _ in range(members)])


def _check_outputs(models: list[nn.Module]) -> str | None:
    """None if the pack of these models gives each member's own output on a random batch."""
    x = torch.randn(4, len(models), 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for m in models:
            m.eval()
        alone = torch.stack([m(x[:, i:i + 1]) for i, m in enumerate(models)], 1)
        try:
            together = pack_model(models).eval()(x).view(alone.shape)
        except RuntimeError as e:
            return f"its forward does not run packed ({str(e).splitlines()[0]})"
    if not torch.allclose(alone, together, rtol=1e-4, atol=1e-5):
        return "its forward mixes channels (a softmax over dim 1, say), so members would meet"
    return None
