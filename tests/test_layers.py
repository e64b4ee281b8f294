"""The package's imports run one way: no cycle, no module reaching up, no trainer where a
stored model is only used.

Every import counts, including those inside functions (a lazy import is still a dependency).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mnist_lab"

# Floors, lowest first: a module may import its own floor and those below, never above.
FLOORS = [
    {"__init__", "allocator", "errors", "config", "data", "idx_cache", "metrics", "envinfo",
     "snapshot", "augment", "presets", "packing", "user_models", "registry", "record_models",
     "models", "model_check", "optim", "ema", "tta", "evaluate", "preprocess", "request_body",
     "study", "robust", "robust.drawing", "robust.corruptions", "robust.calibration",
     "robust.attacks", "robust.saliency", "robust.corrupted_set", "robust.masking"},
    {"train", "train_pack"},
    {"record", "store"},
    {"worker", "pools", "search", "runner", "cluster", "inference", "compare", "document",
     "plots", "search_plots", "report", "ensemble", "tracking",
     "export", "serve", "suites", "suite_figures"},
    {"commands", "study_commands", "compare_command", "suite_command", "model_command",
     "tracking_command", "cli"},
]
FLOOR = {name: i for i, floor in enumerate(FLOORS) for name in floor}
# Modules that use a stored model: predicting, serving or exporting must not pull in training.
NO_TRAINER = ("record", "store", "inference", "request_body", "serve", "export")


def _name(path: Path) -> str:
    """A module's name inside the package: `train`, or `robust.attacks` in a subpackage."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _resolve(base: list[str], dotted: str) -> str:
    """The package module a dotted name under `base` is: a module file, a subpackage (its
    __init__), or the deepest of those that holds it (a name the package defines)."""
    parts = base + [p for p in dotted.split(".") if p]
    while parts:
        path = PACKAGE.joinpath(*parts)
        if path.with_suffix(".py").exists() or (path / "__init__.py").exists():
            return ".".join(parts)
        parts = parts[:-1]
    return "__init__"


def _imports(path: Path) -> set[str]:
    """Modules of the package that a file imports, anywhere in it."""
    here = list(path.relative_to(PACKAGE).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - (node.level - 1)]
            mod = node.module or ""
            # from . import x: x may be a module, or a name the package defines
            found |= ({_resolve(base, f"{mod}.{a.name}") for a in node.names} if not mod
                      else {_resolve(base, mod)})
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mnist_lab."):
            found.add(_resolve([], node.module.removeprefix("mnist_lab.")))
        elif isinstance(node, ast.Import):
            found |= {_resolve([], a.name.removeprefix("mnist_lab.")) for a in node.names
                      if a.name.startswith("mnist_lab.")}
    return found - {""}


GRAPH = {_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _reach(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in GRAPH.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_every_module_has_a_floor():
    assert set(GRAPH) - set(FLOOR) == set(), "place new modules in FLOORS"


def test_no_import_cycle():
    cycles = sorted(m for m in GRAPH if m in _reach(m))
    assert cycles == [], f"modules on an import cycle: {cycles}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_upward_import(module):
    upward = {dep for dep in GRAPH[module] if FLOOR[dep] > FLOOR[module]}
    assert upward == set(), f"{module} (floor {FLOOR[module]}) imports {upward} from above"


@pytest.mark.parametrize("module", NO_TRAINER)
def test_using_a_model_does_not_import_the_trainer(module):
    assert "train" not in _reach(module)
