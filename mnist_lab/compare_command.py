"""`mnist-lab compare`: is B better than A? Runs, study variants or a whole study, from the store.

Each side is a run id (or unique prefix) or a study variant, `STUDY/VARIANT` (its stored seeds);
a study name with `--baseline VARIANT` compares every variant of the baseline's block with it
(or, given a grid point such as `weight_decay=0.0`, each variant with its own at that value).
Nothing is re-evaluated: metrics come from the records, test-set predictions from the stored
outputs.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from .commands import table, write_json
from .compare import Comparison, Side, holm, on_test_set, over_seeds
from .ensemble import variant_runs
from .errors import UserError
from .metrics import METRICS, TestOutputs, metric
from .report import baseline_of
from .store import Store
from .study import expand, find_study, load_study


def _side(store: Store, name: str, quick: bool) -> Side:
    """A run id or prefix, or STUDY/VARIANT: the stored complete runs it names."""
    if "/" not in name:
        record = store.get(name)
        return Side(record.id, [record], _outputs(store, [record]))
    study_name, variant = name.split("/", 1)
    study = load_study(find_study(study_name))
    if not (runs := variant_runs(store, study, variant, quick)):
        raise UserError(f"{name}: no stored complete runs (run `mnist-lab study run "
                        f"{study.name}` first)")
    return Side(name, runs, _outputs(store, runs))


def _outputs(store: Store, runs: list) -> TestOutputs | None:
    """The runs' seed-averaged test probabilities, or None if any run has none stored."""
    stored = [store.outputs(r.id) for r in runs]
    if any(o is None for o in stored):
        return None
    mean = np.mean([o.probabilities.astype(np.float32) for o in stored], axis=0)
    return TestOutputs(mean, stored[0].labels)


def _baseline_pairs(store: Store, args: argparse.Namespace) -> list[tuple[Side, Side]]:
    """Every variant of the block holding the baseline against its baseline (a variant, or a
    grid point such as weight_decay=0.0: each variant against its own at that value)."""
    if len(args.sides) != 1:
        raise UserError("--baseline takes one study name: compare STUDY --baseline VARIANT")
    name, runs = args.sides[0], expand(load_study(find_study(args.sides[0])), args.quick)
    blocks = dict.fromkeys(r.block for r in runs)
    for block in blocks:
        variants = list(dict.fromkeys(r.variant for r in runs if r.block == block))
        pairs = [(base, v) for v in variants
                 if (base := baseline_of(v, args.baseline, variants)) not in (None, v)]
        if pairs:
            return [(_side(store, f"{name}/{a}", args.quick), _side(store, f"{name}/{b}",
                                                                     args.quick))
                    for a, b in pairs]
    raise UserError(f"{name}: no block has a variant {args.baseline!r} to compare with")


def _pairs(store: Store, args: argparse.Namespace) -> list[tuple[Side, Side]]:
    """(A, B) for each comparison asked for: B, C, ... each against A, or against a baseline."""
    if args.baseline:
        return _baseline_pairs(store, args)
    if len(args.sides) < 2:
        raise UserError("compare needs two sides or more: A B [C ...] (or STUDY --baseline V)")
    first = _side(store, args.sides[0], args.quick)
    return [(first, _side(store, s, args.quick)) for s in args.sides[1:]]


def _compare(a: Side, b: Side, args: argparse.Namespace) -> Comparison:
    use_t = args.test == "t" or (args.test == "auto" and min(len(a.runs), len(b.runs)) >= 2)
    if use_t:
        return over_seeds(a, b, args.metric)
    if args.metric != "test_accuracy":
        raise UserError(f"McNemar's test compares test predictions, not {args.metric}: "
                        "compare over seeds (2 runs a side) or use test_accuracy")
    return on_test_set(a, b)


def _row(c: Comparison) -> list[str]:
    m = METRICS[c.metric]
    scale, unit = (100.0, " pp") if m.kind == "fraction" else (1.0, "")

    def side(mean: float, sd: float | None) -> str:
        return m.format(mean) + ("" if sd is None else f" ± {m.format_spread(m.format(mean), sd)}")
    return [c.b, c.a, f"{c.n_b} / {c.n_a}", side(c.mean_b, c.std_b), side(c.mean_a, c.std_a),
            f"{scale * c.difference:+.2f}{unit} [{scale * c.ci_low:+.2f}, "
            f"{scale * c.ci_high:+.2f}]", f"{c.p_value:.3g}",
            "—" if c.p_holm is None else f"{c.p_holm:.3g}", c.test]


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare runs or variants; print a table and a verdict per pair."""
    metric(args.metric)
    with Store(args.runs_dir) as store:
        comparisons = holm([_compare(a, b, args) for a, b in _pairs(store, args)])
    if args.json:
        write_json({"comparisons": [dataclasses.asdict(c) | {"verdict": c.verdict(),
                                                             "significant": c.significant}
                                    for c in comparisons],
                    "holm": len(comparisons) > 1})
        return 0
    print(table(["B", "A", "n B / A", "B", "A", "Δ [95% CI]", "p", "p Holm", "test"],
                [_row(c) for c in comparisons]))
    if len(comparisons) > 1:
        print(f"{len(comparisons)} comparisons: p-values Holm-corrected (p Holm).")
    for c in comparisons:
        print(c.verdict())
    return 0
