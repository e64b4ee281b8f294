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
    {"__init__", "errors", "config", "data", "metrics", "envinfo", "snapshot", "augment",
     "models", "optim", "evaluate", "preprocess", "study"},
    {"train"},
    {"record", "store"},
    {"worker", "runner", "cluster", "inference", "compare", "document", "plots", "report",
     "export", "serve"},
    {"commands", "study_commands", "compare_command", "cli"},
]
FLOOR = {name: i for i, floor in enumerate(FLOORS) for name in floor}
# Modules that use a stored model: predicting, serving or exporting must not pull in training.
NO_TRAINER = ("record", "store", "inference", "serve", "export")


def _imports(path: Path) -> set[str]:
    """Modules of the package that a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # from . import x: a module, or a name the package itself defines
                found |= {a.name if (PACKAGE / f"{a.name}.py").exists() else "__init__"
                          for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mnist_lab."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names
                      if a.name.startswith("mnist_lab.")}
    return found


GRAPH = {p.stem: _imports(p) for p in PACKAGE.glob("*.py")}


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
