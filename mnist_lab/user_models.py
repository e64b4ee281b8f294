"""Models from your own code: a file (`--model path/to/net.py:Name`) or an installed package's
entry point (group `mnist_lab.models`), each an nn.Module subclass or a function returning one.

Loading a file executes it: it is the user's own code, by design. What runs is exactly the
bytes whose sha256 the run's config records (`TrainConfig.model_source`), so a checkpoint
rebuilds its model only from the file it was trained with, and is refused otherwise; the
safetensors checkpoint itself still never executes anything.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from torch import nn

from .config import TrainConfig
from .errors import UserError

GROUP = "mnist_lab.models"  # the entry-point group installed packages declare models in
_MODULES: dict[str, ModuleType] = {}  # sha256 of a file -> its module, executed once a process

Builder = Callable[..., nn.Module]


def is_file_spec(name: str) -> bool:
    """Whether a model name is `path/to/file.py:Name`."""
    path, sep, attr = name.rpartition(":")
    return bool(sep and attr and path.endswith(".py"))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def sha256_of(data: bytes) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(data).hexdigest()


def resolve_model(cfg: TrainConfig, base: str | Path | None = None) -> TrainConfig:
    """The config with its model file's absolute path and sha256 in `model_source`, and the
    model named `<file name>:Name`; a relative path is taken from `base` (default: the current
    folder). Built-in and installed models, and resolved configs, come back as they are."""
    if not is_file_spec(cfg.model) or cfg.model_source:
        return cfg
    file, _, attr = cfg.model.rpartition(":")
    path = Path(os.path.abspath(Path(base or ".").expanduser() / Path(file).expanduser()))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such model file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read the model file ({e.strerror or e})") from None
    # The file's name, not its folder, goes in `model`: the key then follows the file's bytes,
    # not where it lies or how the path was typed (TrainConfig.key leaves the path out too).
    return dataclasses.replace(cfg, model=f"{path.name}:{attr}",
                               model_source={"path": str(path), "sha256": sha256_of(data)})


def verify_source(source: dict, who: str) -> bytes:
    """The model file's bytes, if they hash to what `who` was made with; else one line naming
    the file and the hash it needs."""
    path, want = source["path"], source["sha256"]
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        state = "the file is missing"
    except OSError as e:
        state = f"the file cannot be read ({e.strerror or e})"
    else:
        got = sha256_of(data)
        if got == want:
            return data
        state = f"the file has sha256 {got[:16]}…"
    raise UserError(f"{who} needs model file {path} with sha256 {want[:16]}…; {state}")


def _module(source: dict, who: str) -> ModuleType:
    """The file's module, executed once per process from the bytes that were checked."""
    data, sha = verify_source(source, who), source["sha256"]
    if sha not in _MODULES:
        # Named after the content: two net.py files from different folders never clash.
        name = f"mnist_lab_user_{sha[:16]}"
        spec = importlib.util.spec_from_file_location(name, source["path"])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # as `import` does: dataclasses and pickle look it up
        try:
            # The bytes just hashed, not a second read of the file: what runs is what was checked.
            exec(compile(data, source["path"], "exec"), module.__dict__)  # noqa: S102 - by design
        except (Exception, SystemExit) as e:
            del sys.modules[name]
            raise UserError(f"{source['path']}: {_first_line(e)}") from None
        _MODULES[sha] = module
    return _MODULES[sha]


def _defined_models(module: ModuleType) -> list[str]:
    """Classes and functions the file itself defines: the names it could have meant."""
    return [n for n, v in vars(module).items() if not n.startswith("_")
            and getattr(v, "__module__", None) == module.__name__
            and (inspect.isfunction(v) or (isinstance(v, type) and issubclass(v, nn.Module)))]


def file_builder(name: str, source: dict | None = None) -> Builder:
    """The builder of `file.py:Name`, from the file `source` names (checked against its
    hash), or else from the name's path, taken from the current folder."""
    if source is None:
        cfg = resolve_model(TrainConfig(model=name))
        name, source = cfg.model, cfg.model_source
    module = _module(source, f"model {name!r}")
    attr = name.rpartition(":")[2]
    if attr not in vars(module):
        known = _defined_models(module)
        raise UserError(f"{source['path']}: no {attr!r} in it"
                        + (f" (it defines {', '.join(known)})" if known else ""))
    return as_builder(vars(module)[attr], f"{source['path']}:{attr}")


def as_builder(obj: object, where: str) -> Builder:
    """A class or factory as a builder whose every result is checked to be an nn.Module."""
    if isinstance(obj, nn.Module):
        raise UserError(f"{where} is an nn.Module instance; name its class, or a function that "
                        "builds one (each run builds a fresh model)")
    if not callable(obj) or (isinstance(obj, type) and not issubclass(obj, nn.Module)):
        raise UserError(f"{where} is not an nn.Module subclass or a function returning one "
                        f"(it is of type {type(obj).__name__})")

    def build(**kw) -> nn.Module:
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):  # a callable without one: let the call decide
            signature = None
        if signature is not None:
            signature.bind(**kw)  # a TypeError here is a bad --model-arg (models.create_model)
        try:
            model = obj(**kw)
        except Exception as e:  # noqa: BLE001 - the user's code: any error, in one line
            raise UserError(f"{where}: building the model failed ({_first_line(e)})") from None
        if not isinstance(model, nn.Module):
            raise UserError(f"{where} returned an object of type {type(model).__name__}, not "
                            "an nn.Module")
        return model

    # __wrapped__ gives `build` the signature of obj: build_model passes dropout and seed
    # only to models that take them. (No __dict__ copy: obj may be a class.)
    return functools.update_wrapper(build, obj, updated=())


def installed_models() -> dict[str, importlib.metadata.EntryPoint]:
    """Models that installed packages declare (entry-point group mnist_lab.models), by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}


def describe(ep: importlib.metadata.EntryPoint) -> str:
    """Where an installed model comes from: its entry point, and package and version."""
    dist = getattr(ep, "dist", None)
    return f"installed: {ep.value}" + (f" ({dist.name} {dist.version})" if dist else "")


def installed_builder(ep: importlib.metadata.EntryPoint) -> Builder:
    """The builder an entry point names; an import that fails is one line naming it."""
    where = f"model {ep.name!r} (entry point {ep.value})"
    try:
        obj = ep.load()
    except Exception as e:  # noqa: BLE001 - the package's code: any error, in one line
        raise UserError(f"{where}: {_first_line(e)}") from None
    return as_builder(obj, where)
