"""Studies: a TOML file of named blocks of runs, expanded into TrainConfigs and executed.

The reference studies ship inside the package (mnist_lab/studies/*.toml) and are found by name
from any directory; a user's own study is a path to a file anywhere.

A study file holds a `base` (overrides of TrainConfig defaults shared by every run), `seeds`,
and `[[blocks]]`, each with its own `base` and a `grid` (a dict of lists, expanded as a
product) or `variants` (a list of named override dicts). Blocks may also carry the source
document's figures (`reference`) and what to tabulate and plot; report.py reads those.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .config import TrainConfig
from .errors import UserError
from .metrics import SUITE_COLUMNS, metric
from .models import model_builder
from .user_models import resolve_model

SHIPPED = Path(__file__).with_name("studies")  # package data: installed with mnist-lab
# What a study file may say, and of what type: anything else is a mistake, named in one line.
TOP_KEYS = {"name": str, "title": str, "source": str, "seeds": list, "notes": str, "base": dict,
            "blocks": list}
BLOCK_KEYS = {"name": str, "title": str, "notes": str, "base": dict, "grid": dict,
              "variants": list, "seeds": list, "table": list, "plots": list, "reference": dict,
              "select_by": str, "selected_reference": str, "selected_figure": float,
              "baseline": str, "compare": str, "evaluate": list, "search": dict,
              "ensembles": list, "targets": dict}
ENSEMBLE_KEYS = {"name": str, "members": list}
SEARCH_KEYS = {"n_trials": int, "objective": str, "sampler": str, "pruner": str, "seed": int,
               "space": dict, "against": str}
SAMPLERS, PRUNERS = ("tpe", "random"), ("none", "median", "halving")

# --quick: what every study shrinks to so CI can exercise each file in seconds.
QUICK = {"epochs": 1, "test_subset": 500}
QUICK_SUBSET = 200


@dataclass(frozen=True)
class Run:
    """One run of a study: which block and variant it belongs to, and its config."""

    block: str
    variant: str
    seed: int
    config: TrainConfig


@dataclass
class Study:
    """A parsed study file."""

    name: str
    title: str
    source: str
    seeds: list[int]
    base: dict
    blocks: list[dict]
    path: Path | None = None
    notes: str = ""

    def folder(self) -> Path | None:
        """Where relative model files are found: the study file's folder."""
        return self.path.parent if self.path is not None else None

    def store_name(self, quick: bool) -> str:
        """Runs of a quick study are stored apart from the full one."""
        return f"{self.name}:quick" if quick else self.name

    def only(self, names: list[str]) -> Study:
        """The study with only the named blocks (stored under the same study name)."""
        known = [b["name"] for b in self.blocks]
        if unknown := [n for n in names if n not in known]:
            raise UserError(f"study {self.name} has no block {unknown[0]!r} (its blocks: "
                            f"{', '.join(known)})")
        return dataclasses.replace(self, blocks=[b for b in self.blocks if b["name"] in names])


def list_studies() -> list[str]:
    """Names of the studies shipped with mnist-lab."""
    return sorted(p.stem for p in SHIPPED.glob("*.toml"))


def find_study(name: str) -> Path:
    """A study file by path, else a shipped study by name; unknown names list the known."""
    path = Path(name)
    if path.is_file() or path.suffix == ".toml":
        return path
    if (SHIPPED / f"{name}.toml").is_file():
        return SHIPPED / f"{name}.toml"
    raise UserError(f"no study {name!r}: not a file, and not one of the shipped studies "
                    f"({', '.join(list_studies())})")


def load_study(path: str | Path) -> Study:
    """Parse and check a study file; every run config is validated up front."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such study file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid TOML ({e})") from None
    try:
        _check_keys(doc)
        study = Study(name=doc["name"], title=doc.get("title", doc["name"]),
                      source=doc.get("source", ""), seeds=doc.get("seeds", [0]),
                      base=doc.get("base", {}), blocks=doc["blocks"], path=path,
                      notes=doc.get("notes", ""))
        for run in expand(study):
            run.config.validate()
            model_builder(run.config)  # unknown model, or a model file that fails to load
        _check_search_ends(study)
        _check_metrics(study)
        _check_baselines(study)
        _check_targets(study)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    return study


def _typed(where: str, d: dict, keys: dict[str, type]) -> None:
    """Every key known, every value of its type (an int is a float too)."""
    for key, value in d.items():
        if key not in keys:
            raise UserError(f"{where}unknown key {key!r} (known: {', '.join(keys)})")
        want = keys[key]
        if not isinstance(value, want) and not (want is float and isinstance(value, int)):
            raise UserError(f"{where}{key!r} must be a {want.__name__}, got "
                            f"{type(value).__name__} {value!r}")


def _check_keys(doc: dict) -> None:
    """The file's structure: known keys of the right types, grids with values, variants with
    distinct names."""
    missing = [k for k in ("name", "blocks") if k not in doc]
    if missing:
        raise UserError(f"missing {', '.join(missing)}")
    _typed("", doc, TOP_KEYS)
    for i, block in enumerate(doc["blocks"]):
        if not isinstance(block, dict) or "name" not in block:
            raise UserError(f"block {i + 1} needs a name")
        where = f"block {block['name']!r}: "
        _typed(where, block, BLOCK_KEYS)
        if "search" in block:
            _check_search(where, block, {**doc.get("base", {}), **block.get("base", {})})
            chosen = [b.get("name") for b in doc["blocks"] if isinstance(b, dict)
                      and "select_by" in b]
            against = block["search"].get("against")
            if against is not None and against not in chosen:
                raise UserError(f"{where}search against {against!r}: name a block with "
                                f"select_by ({', '.join(chosen) or 'there is none'})")
        if "ensembles" in block:
            _check_ensembles(where, block, doc["blocks"])
        for suite in block.get("evaluate", []):
            if suite not in SUITE_COLUMNS:
                raise UserError(f"{where}evaluate: unknown suite {suite!r}; choose from "
                                f"{', '.join(SUITE_COLUMNS)}")
        for key, values in block.get("grid", {}).items():
            if not isinstance(values, list) or not values:
                raise UserError(f"{where}grid key {key!r} needs a non-empty list of values")
        names = [v.get("name") for v in block.get("variants", []) if isinstance(v, dict)]
        if len(names) != len(block.get("variants", [])) or None in names:
            raise UserError(f"{where}every variant needs a name")
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise UserError(f"{where}duplicate variant name {dupes[0]!r}")


def _check_ensembles(where: str, block: dict, blocks: list) -> None:
    """An ensembles block: named ensembles of variants, each of this study (VARIANT) or of
    another (STUDY/VARIANT, checked when the report is written); it trains nothing itself."""
    if any(k in block for k in ("grid", "variants", "search")):
        raise UserError(f"{where}an ensembles block has no grid, variants or search: it "
                        "combines stored runs")
    ours = {name for b in blocks if isinstance(b, dict) and "ensembles" not in b
            for name, _ in _variants(b)}
    names = []
    for spec in block["ensembles"]:
        if not isinstance(spec, dict) or not {"name", "members"} <= set(spec):
            raise UserError(f"{where}each ensemble is {{ name = ..., members = [...] }}")
        _typed(f"{where}ensemble {spec['name']!r}: ", spec, ENSEMBLE_KEYS)
        names.append(spec["name"])
        if not spec["members"] or not all(isinstance(m, str) for m in spec["members"]):
            raise UserError(f"{where}ensemble {spec['name']!r} needs members: variant names")
        if unknown := [m for m in spec["members"] if "/" not in m and m not in ours]:
            raise UserError(f"{where}ensemble {spec['name']!r}: no variant {unknown[0]!r} in "
                            "this study (another study's is STUDY/VARIANT)")
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise UserError(f"{where}duplicate ensemble name {dupes[0]!r}")


def _check_search(where: str, block: dict, base: dict) -> None:
    """A search block: its keys and types, a space over TrainConfig fields, a validation
    objective and the hold-out it is measured on."""
    if "grid" in block or "variants" in block:
        raise UserError(f"{where}a search block has no grid or variants: its trials are them")
    spec = block["search"]
    _typed(f"{where}search: ", spec, SEARCH_KEYS)
    for key in ("n_trials", "space"):
        if key not in spec:
            raise UserError(f"{where}search needs {key!r}")
    if spec["n_trials"] < 1 or not spec["space"]:
        raise UserError(f"{where}search needs n_trials >= 1 and a non-empty space")
    if not spec.get("objective", "val_accuracy").startswith("val_"):
        raise UserError(f"{where}search objective must be a validation metric (val_accuracy, "
                        "val_loss): choosing on test would leak it")
    metric(spec.get("objective", "val_accuracy"))
    if not base.get("val_size"):
        raise UserError(f"{where}search optimises {spec.get('objective', 'val_accuracy')}: give "
                        "its runs a validation hold-out (val_size = N in base)")
    if spec.get("sampler", "tpe") not in SAMPLERS or spec.get("pruner", "median") not in PRUNERS:
        raise UserError(f"{where}search sampler is one of {', '.join(SAMPLERS)}, pruner one of "
                        f"{', '.join(PRUNERS)}")
    fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for name, dim in spec["space"].items():
        if name not in fields or name in ("seed", "device", "threads"):
            raise UserError(f"{where}search space: {name!r} is not a TrainConfig field to tune")
        ok = isinstance(dim, dict) and (
            (set(dim) == {"choices"} and isinstance(dim["choices"], list) and dim["choices"])
            or ({"low", "high"} <= set(dim) <= {"low", "high", "log", "step"}
                and fields[name] in ("int", "float") and dim["low"] < dim["high"]))
        if not ok:
            raise UserError(f"{where}search space {name!r}: give {{ choices = [...] }} or "
                            "{ low = L, high = H } (with log = true or step = S) for a number")


def _check_search_ends(study: Study) -> None:
    """Each search block's configs at the two ends of its space, checked as a grid's runs are:
    its trials are decided as the search goes, so these stand for them before anything trains."""
    for block in (b for b in study.blocks if "search" in b):
        for end in (0, -1):
            point = {name: dim["choices"][end] if "choices" in dim else dim[("low", "high")[end]]
                     for name, dim in block["search"]["space"].items()}
            values = {**study.base, **block.get("base", {}), **point,
                      "seed": block.get("seeds", study.seeds)[0]}
            try:
                cfg = resolve_model(TrainConfig.from_dict(values), study.folder()).validate()
                model_builder(cfg)
            except UserError as e:
                raise UserError(f"block {block['name']!r}: {e}") from None


def _check_baselines(study: Study) -> None:
    """A block's `baseline` is one of its variants, or a value of one of its grid's keys
    (`weight_decay=0.0`: each variant against the one equal to it but at that value)."""
    for block in study.blocks:
        base, names = block.get("baseline"), [name for name, _ in _variants(block)]
        if base is None or base in names:
            continue
        key, _, value = base.partition("=")
        values = [str(v) for v in block.get("grid", {}).get(key, [])]
        if value not in values:
            raise UserError(f"block {block['name']!r}: baseline {base!r} is neither one of its "
                            f"variants ({', '.join(names)}) nor KEY=VALUE of its grid")


def _check_targets(study: Study) -> None:
    """A block's `targets` give some of its variants a bar for the compared metric."""
    for block in study.blocks:
        names = [name for name, _ in _variants(block)]
        for variant, bar in block.get("targets", {}).items():
            if variant not in names:
                raise UserError(f"block {block['name']!r}: target for {variant!r}, which is not "
                                f"one of its variants ({', '.join(names)})")
            if not isinstance(bar, int | float) or isinstance(bar, bool):
                raise UserError(f"block {block['name']!r}: target {variant!r} must be a number, "
                                f"got {bar!r}")


def _check_metrics(study: Study) -> None:
    """Every metric a block tabulates, selects by or plots must be a registered one."""
    for block in study.blocks:
        names = list(block.get("table", [])) + [block[k] for k in ("select_by", "compare")
                                                if k in block]
        names += [m for spec in block.get("plots", []) for m in spec.get("metrics", [])]
        for name in names:
            try:
                metric(name)
            except UserError as e:
                raise UserError(f"block {block.get('name')!r}: {e}") from None


def _variants(block: dict) -> list[tuple[str, dict]]:
    """(name, overrides) of each variant of a block: explicit list, grid product, or one."""
    if "variants" in block:
        return [(v["name"], {k: x for k, x in v.items() if k != "name"})
                for v in block["variants"]]
    grid = block.get("grid", {})
    if not grid:
        return [(block["name"], {})]
    keys = list(grid)
    points = [dict(zip(keys, values, strict=True))
              for values in itertools.product(*(grid[k] for k in keys))]
    return [(",".join(f"{k}={v}" for k, v in p.items()), p) for p in points]


def expand(study: Study, quick: bool = False) -> list[Run]:
    """Every run of the study, in file order; --quick shrinks each and keeps one seed."""
    runs = []
    seeds = study.seeds[:1] if quick else study.seeds
    for block in study.blocks:
        if "name" not in block:
            raise UserError(f"study {study.name}: every block needs a name")
        if "search" in block:  # its runs are the search's trials, decided as it goes (search.py)
            continue
        if "ensembles" in block:  # combines stored runs (ensemble.py): nothing to train
            continue
        for variant, overrides in _variants(block):
            for seed in block.get("seeds", seeds)[: 1 if quick else None]:
                values = {**study.base, **block.get("base", {}), **overrides, "seed": seed}
                if quick:
                    values.update(QUICK, subset=min(values.get("subset") or QUICK_SUBSET,
                                                    QUICK_SUBSET))
                # A model file's path is taken from the study file's folder, not from
                # wherever `study run` is typed: the study then runs the same from anywhere.
                cfg = resolve_model(TrainConfig.from_dict(values), study.folder())
                runs.append(Run(block["name"], variant, seed, cfg))
    return runs
