"""`mnist-lab models check MODEL`: the checks every model must pass, for a model of your own."""

from __future__ import annotations

import argparse

from .commands import write_json
from .config import TrainConfig
from .errors import UserError
from .model_check import check_model
from .models import build_model, model_entry
from .user_models import resolve_model


def cmd_models_check(args: argparse.Namespace) -> int:
    """Build the model as `train` would and check it: 0 if every check passes, 1 if one fails;
    a model that cannot be built (no file, no such name, an error in it) is bad input."""
    if not args.model:
        raise UserError("models check needs a model: path/to/file.py:Name, or a model name")
    cfg = resolve_model(TrainConfig(model=args.model, model_kwargs=dict(args.model_kwargs)))
    if model_entry(cfg.model).kind != "torch":
        raise UserError(f"model {cfg.model!r} is a scikit-learn model: only torch models are "
                        "checked")
    checks = check_model(lambda: build_model(cfg))
    failed = [c for c in checks if not c.ok]
    if args.json:
        write_json({"model": cfg.model, "model_source": cfg.model_source or None,
                    "model_kwargs": cfg.model_kwargs, "ok": not failed,
                    "checks": [c.to_dict() for c in checks]})
        return 1 if failed else 0
    where = cfg.model_source.get("path", "")
    print(f"{cfg.model}" + (f" ({where})" if where else ""))
    for c in checks:
        print(f"  {'ok' if c.ok else 'FAILED':<7} {c.name:<14} {c.detail}")
    print(f"{len(failed)} of {len(checks)} checks FAILED" if failed
          else f"all {len(checks)} checks passed")
    return 1 if failed else 0
