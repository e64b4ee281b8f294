"""The model registry: `register_model` adds a builder, `create_model` builds one by name.

Families of models live in their own files (models.py: the reference studies' zoo;
record_models.py: the records study's) and register themselves here; models.py imports every
family, so import the registry's functions from there. Besides registered names, a name may be
an installed package's model or `path/to/file.py:Name` (user_models.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .config import TrainConfig
from .errors import UserError
from .user_models import describe, file_builder, installed_builder, installed_models, is_file_spec


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, kind and where it comes from."""

    name: str
    build: Callable[..., object]
    kind: str  # "torch" or "classical"
    source: str  # the reference study or document it reproduces


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(kind: str = "torch", source: str = "") -> Callable:
    """Decorator: add a builder to the registry under its function name."""
    def wrap(fn: Callable) -> Callable:
        _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, fn, kind, source)
        return fn
    return wrap


def list_models(kind: str | None = None) -> list[str]:
    """Registered model names, then installed packages' (all torch), optionally of one kind."""
    names = [n for n, e in _REGISTRY.items() if kind is None or e.kind == kind]
    if kind in (None, "torch"):  # the zoo's names win: an installed model cannot shadow one
        names += [n for n in installed_models() if n not in _REGISTRY]
    return names


def model_entry(name: str) -> ModelEntry:
    """The entry for `name`: the zoo's, an installed package's, or a model file's; an unknown
    name is a UserError naming the choices."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if is_file_spec(name):
        # Loaded only when built: asking a run's kind must not need its file (it may be gone).
        return ModelEntry(name, lambda **kw: file_builder(name)(**kw), "torch", "model file")
    if (ep := installed_models().get(name)) is not None:
        return ModelEntry(name, installed_builder(ep), "torch", describe(ep))
    if name.endswith(".py"):
        raise UserError(f"model {name!r}: say which model in the file, {name}:Name")
    raise UserError(f"unknown model {name!r}; choose from {', '.join(list_models())}, or "
                    "give a file: path/to/file.py:Name")


def _call(name: str, build: Callable[..., object], kw: dict) -> object:
    try:
        return build(**kw)
    except TypeError as e:
        raise UserError(f"model {name!r}: bad argument ({e})") from None


def create_model(name: str, **kw) -> object:
    """Build a registered model; keyword arguments go to its builder."""
    return _call(name, model_entry(name).build, kw)


def model_builder(cfg: TrainConfig) -> Callable[..., object]:
    """The builder the config names; a model file is loaded from the path and checked against
    the sha256 its `model_source` records (an unresolved one is taken from here)."""
    if not is_file_spec(cfg.model):
        return model_entry(cfg.model).build
    return file_builder(cfg.model, cfg.model_source or None)


def build_model(cfg: TrainConfig) -> object:
    """The model the config names, with --dropout and the seed passed where it applies."""
    kw, build = dict(cfg.model_kwargs), model_builder(cfg)
    params = inspect.signature(build).parameters
    if cfg.dropout >= 0:
        if "dropout" not in params:
            raise UserError(f"model {cfg.model!r} has no dropout to set")
        kw["dropout"] = cfg.dropout
    if "seed" in params:
        kw.setdefault("seed", cfg.seed)
    return _call(cfg.model, build, kw)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
