"""Study reports from stored runs only: Markdown + self-contained HTML, tables and plots.

For each block of the study file: a table of mean ± std over seeds for the block's `table`
metrics beside the source document's figures (`reference`) and the difference; the winner of a
`select_by` search; and the block's `plots` (plots.py). Nothing here trains or reaches into a
training loop.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from pathlib import Path

from . import (
    search_plots,  # noqa: F401 - registers the search blocks' plot kinds
    suite_figures,  # noqa: F401 - registers the suites' plot kinds in PLOTS
)
from .compare import Comparison, Side, against_figure, holm, over_seeds
from .document import Report, fmt, mean_std
from .errors import UserError
from .metrics import METRICS, SUITE_COLUMNS
from .plots import PLOTS, complete
from .record import RunRecord
from .search import study_runs
from .study import Run, Study


def _group(runs: list[Run], records: list[RunRecord]) -> tuple[dict, dict, Counter]:
    """Records of each (block, variant) matched by config key, variant order per block, and
    how many runs the study file expects of each (block, variant).

    Matching by key rather than by the stored labels lets blocks share a run (the same config
    in two tables) and survives renaming a variant.
    """
    by_key = {r.key: r for r in records}  # oldest first, so the latest attempt wins
    groups, order, expected = defaultdict(list), defaultdict(list), Counter()
    for run in runs:
        expected[(run.block, run.variant)] += 1
        if run.variant not in order[run.block]:
            order[run.block].append(run.variant)
        if (record := by_key.get(run.config.key())) is not None:
            groups[(run.block, run.variant)].append(record)
    return groups, order, expected


def baseline_of(variant: str, baseline: str, variants: list[str]) -> str | None:
    """The variant a variant is compared with: the baseline itself, or for a grid point named
    partly (`weight_decay=0.0`), the variant equal to this one but at that value."""
    if baseline in variants:
        return baseline
    key = baseline.partition("=")[0]
    name = ",".join(baseline if p.partition("=")[0] == key else p for p in variant.split(","))
    return name if name in variants else None


def _against_baseline(block: dict, variants: list[str], groups: dict) -> dict[str, Comparison]:
    """Each variant against its baseline over seeds, Holm-corrected within the block."""
    base, metric = block.get("baseline"), block.get("compare", "test_accuracy")
    if base is None:
        return {}
    tests = []
    for v in variants:
        ref = baseline_of(v, base, variants)
        if ref is None or ref == v:
            continue
        a, b = complete(groups, block, ref), complete(groups, block, v)
        if min(len(a), len(b)) >= 2:
            tests.append(over_seeds(Side(ref, a), Side(v, b), metric))
    return {c.b: c for c in holm(tests)}


def _against_source(block: dict, variants: list[str], groups: dict) -> list[Comparison | str]:
    """Each variant's seeds against the source's single figure, for the compared metric and
    every other accuracy the source gives, Holm-corrected per metric within the block; a
    variant that cannot be tested says why."""
    refs = block.get("reference", {})
    given = dict.fromkeys(m for v in variants for m in refs.get(v, {})
                          if METRICS[m].kind == "fraction")
    out: list[Comparison | str] = []
    for metric in dict.fromkeys([block.get("compare", "test_accuracy"), *given]):
        tested, untested = [], []
        for v in variants:
            if metric in refs.get(v, {}) and len(runs := complete(groups, block, v)) >= 2:
                try:
                    tested.append(against_figure(Side(v, runs), refs[v][metric], metric,
                                                 "the source"))
                except UserError as e:
                    untested.append(str(e))
        out += holm(tested) + untested
    return out


def _against_targets(block: dict, variants: list[str], groups: dict) -> list[str]:
    """Each variant with a target: met when its mean reaches the bar, and a one-sample t-test
    of its seeds against it (Holm within the block) that says whether the margin is real."""
    metric, bars = block.get("compare", "test_accuracy"), block.get("targets", {})
    out, tests = [], []
    for v in (v for v in variants if v in bars):
        runs = complete(groups, block, v)
        if not runs:
            continue
        mean = statistics.mean(r.metric(metric) for r in runs)
        good = mean >= bars[v] if METRICS[metric].higher_is_better else mean <= bars[v]
        out.append(f"{v}: {fmt(metric, mean)} against the target {fmt(metric, bars[v])}, "
                   f"{'met' if good else 'missed'}")
        if len(runs) >= 2:
            tests.append(against_figure(Side(v, runs), bars[v], metric, "the target"))
    return out + [c.verdict() for c in holm(tests)]


def _delta(c: Comparison | None) -> list[str]:
    if c is None:
        return ["—", "—"]
    scale = 100.0 if METRICS[c.metric].kind == "fraction" else 1.0
    return [f"{scale * c.difference:+.2f} [{scale * c.ci_low:+.2f}, {scale * c.ci_high:+.2f}]",
            f"{c.p_holm if c.p_holm is not None else c.p_value:.2g}"]


def _verdicts(rep: Report, block: dict, variants: list[str], groups: dict,
              quick: bool) -> None:
    """The block's verdicts in words, generated from the tests, never written by hand."""
    lines = [c.verdict() for c in _against_baseline(block, variants, groups).values()]
    lines += [] if quick else _against_targets(block, variants, groups)
    lines += [] if quick else [c if isinstance(c, str) else c.verdict()
                               for c in _against_source(block, variants, groups)]
    if lines:
        rep.text("Verdicts (95%, Holm-corrected within the block):")
        rep.bullets([line + "." for line in lines])
    elif "baseline" in block:
        rep.text(f"No test against {block['baseline']}: it needs 2 complete runs a side.")


def _table(rep: Report, block: dict, variants: list[str], groups: dict,
           expected: Counter, quick: bool) -> None:
    metrics = list(block.get("table", ["test_accuracy"]))
    metrics += [m for suite in block.get("evaluate", []) for m in SUITE_COLUMNS[suite]
                if m not in metrics]  # what the block's suites measured
    refs = {} if quick else block.get("reference", {})  # one quick epoch is not comparable
    header, rows = ["variant", "runs"], []
    for m in metrics:
        header += [m] + (["source", "Δ"] if any(m in refs.get(v, {}) for v in variants) else [])
    tests = _against_baseline(block, variants, groups)
    bars = {} if quick else block.get("targets", {})  # one quick epoch is not held to them
    if bars:
        header.append("target")
    if "baseline" in block:
        unit = " (pp)" if METRICS[block.get("compare", "test_accuracy")].kind == "fraction" else ""
        header += [f"vs {block['baseline']}{unit} [95% CI]", "p (Holm)"]
    for v in variants:
        runs = groups.get((block["name"], v), [])
        ok = [r for r in runs if r.status == "complete"]
        # complete/expected, so a study still running shows what it lacks
        bad = Counter(r.status for r in runs if r.status != "complete")
        row = [v, f"{len(ok)}/{expected[(block['name'], v)]}"
               + "".join(f", {n} {s}" for s, n in sorted(bad.items()))]
        for m in metrics:
            xs = [r.metric(m) for r in ok]
            row.append(mean_std(m, xs))
            if any(m in refs.get(u, {}) for u in variants):
                ref = refs.get(v, {}).get(m)
                mean = statistics.mean(xs) if xs and None not in xs else None
                diff = None if ref is None or mean is None else mean - ref
                sign = "+" if diff is not None and diff >= 0 else ""
                delta = "—" if diff is None else sign + fmt(m, diff).replace("%", " pp")
                row += [fmt(m, ref), delta]
        if bars:
            row.append(fmt(block.get("compare", "test_accuracy"), bars[v]) if v in bars else "—")
        rows.append(row + (_delta(tests.get(v)) if "baseline" in block else []))
    rep.table(header, rows)


def _scored(block: dict, variants: list[str], groups: dict) -> list[tuple]:
    """(score, variant, its complete runs) of each variant by the block's `select_by`; the
    score is rounded because means of counts tie exactly, but float sums may break the tie
    in the last bit."""
    by = block["select_by"]
    return [(round(statistics.mean(r.metric(by) for r in ok), 9), v, ok) for v in variants
            if (ok := complete(groups, block, v))]


def _selected(block: dict, variants: list[str], groups: dict) -> tuple | None:
    """(score, variant, its complete runs) of the variant best by the block's `select_by`;
    a tie goes to the variant first in the file (and _select names the others)."""
    scored = _scored(block, variants, groups)
    return max(scored, key=lambda t: t[0]) if scored else None


def _search_summary(rep: Report, study: Study, block: dict, order: dict, groups: dict) -> None:
    """The best trial's parameters, its test accuracy over seeds and, with `against`, a test
    of it against another block's selected variant (a grid's winner, say)."""
    best = complete(groups, block, "best")
    if not best:
        return
    trials = [v for v in order[block["name"]] if v.startswith("trial-")]
    pruned = sum(r.status == "pruned" for v in trials for r in groups.get((block["name"], v),
                                                                         []))
    values = {k: getattr(best[0].config, k) for k in block["search"]["space"]}
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in values.items())
    test = mean_std("test_accuracy", [r.metric("test_accuracy") for r in best])
    text = (f"Best of {len(trials)} trials ({pruned} pruned) by "
            f"{block['search'].get('objective', 'val_accuracy')}: {params}; test accuracy over "
            f"{len(best)} seed{'s' * (len(best) != 1)}: {test}.")
    other = next((b for b in study.blocks if b["name"] == block["search"].get("against")), None)
    if other is not None and len(best) >= 2 and (
            chosen := _selected(other, order[other["name"]], groups)) is not None:
        try:
            text += " " + over_seeds(Side(f"{other['name']} winner {chosen[1]}", chosen[2]),
                                     Side("search best", best), "test_accuracy").verdict() + "."
        except UserError as e:
            text += f" {e}."
    rep.text(text)


def _select(rep: Report, block: dict, variants: list[str], groups: dict) -> None:
    by = block["select_by"]
    if (chosen := _selected(block, variants, groups)) is None:
        return
    best, variant, ok = chosen
    test = mean_std("test_accuracy", [r.metric("test_accuracy") for r in ok])
    verdict = ""
    if "selected_figure" in block and len(ok) >= 2:  # the source's winner's test figure
        try:
            verdict = " " + against_figure(Side(variant, ok), block["selected_figure"],
                                           "test_accuracy", "the source's winner").verdict() + "."
        except UserError as e:
            verdict = f" {e}."
    tied = [v for score, v, _ in _scored(block, variants, groups) if score == best and v != variant]
    ties = f" (tied with {', '.join(tied)}: the first in the file is taken)" if tied else ""
    rep.text(f"Selected by {by} ({fmt(by, best)}): {variant}{ties}; its test accuracy: {test}."
             + (f" Source: {block['selected_reference']}." if "selected_reference" in block
                else "") + verdict)


def _ensembles(rep: Report, block: dict, ensembles: dict) -> None:
    """An ensembles block: each ensemble's members, size, cost and both ways of combining."""
    rows, why = [], []
    for spec in block["ensembles"]:
        e = ensembles.get((block["name"], spec["name"]), "not evaluated (no store given)")
        if isinstance(e, str):
            why.append(f"{spec['name']}: {e}")
            continue
        rows.append([e.name, ", ".join(e.members), str(e.runs), fmt("params", e.params),
                     fmt("mflops", e.mflops), fmt("wall_seconds", e.wall_seconds),
                     fmt("test_accuracy", e.member_accuracy),
                     fmt("test_accuracy", e.best_member_accuracy),
                     fmt("test_accuracy", e.averaged), fmt("test_accuracy", e.majority)])
    if rows:
        rep.table(["ensemble", "members", "runs", "params", "mflops", "wall_seconds",
                   "member mean", "best member", "averaged probabilities", "majority vote"],
                  rows)
    tests = [e.vs_best for spec in block["ensembles"]
             if not isinstance(e := ensembles.get((block["name"], spec["name"]), ""), str)
             and e.vs_best is not None]
    if tests:
        rep.text("Averaged probabilities against the best run alone (95%, Holm-corrected "
                 "within the block):")
        rep.bullets([c.verdict() + "." for c in holm(tests)])
    if why:
        rep.text("Not formed: " + "; ".join(why) + ".")


def _block(rep: Report, study: Study, block: dict, order: dict, groups: dict,
           expected: Counter, quick: bool, ensembles: dict) -> None:
    """One block's section: its table, verdicts, selection, search summary and plots."""
    variants = order[block["name"]]
    rep.heading(block.get("title", block["name"]))
    if block.get("notes"):
        rep.text(block["notes"].strip())
    if "ensembles" in block:
        _ensembles(rep, block, ensembles)
        return
    _table(rep, block, variants, groups, expected, quick)
    _verdicts(rep, block, variants, groups, quick)
    if "select_by" in block:
        _select(rep, block, variants, groups)
    if "search" in block:
        _search_summary(rep, study, block, order, groups)
    searched = [{"kind": "search_history"}, {"kind": "importances"}] if "search" in block \
        else []
    for spec in block.get("plots", []) + searched:
        if spec.get("kind") not in PLOTS:
            raise UserError(f"block {block['name']!r}: unknown plot kind "
                            f"{spec.get('kind')!r}; choose from {', '.join(PLOTS)}")
        PLOTS[spec["kind"]](rep, spec, block, variants, groups)


def write_report(study: Study, records: list[RunRecord], out_dir: Path,
                 quick: bool = False, ensembles: dict | None = None) -> Path:
    """Write report.md, report.html and the PNG plots into out_dir; return the HTML path.

    `ensembles` holds the ensembles blocks' results (ensemble.study_ensembles), which need
    the store's test outputs rather than the records alone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = Report(out_dir)
    runs = study_runs(study, records, quick)
    groups, order, expected = _group(runs, records)
    rep.heading(study.title + (" (quick mode)" if quick else ""), 1)
    keys = {run.config.key() for run in runs}
    statuses = Counter(r.status for r in records if r.key in keys)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    rep.text(f"Source: {study.source}. Runs stored: {statuses.total()} of the {len(keys)} the "
             f"study defines" + (f" ({counts})." if counts else "."))
    if quick:
        rep.text("Quick mode: one epoch on a few hundred images, a smoke test of the study. "
                 "Its figures are not comparable with the source's, which are not shown.")
    if study.notes:
        rep.text(study.notes.strip())
    for block in study.blocks:
        _block(rep, study, block, order, groups, expected, quick, ensembles or {})
    (out_dir / "report.md").write_text(rep.markdown())
    (out_dir / "report.html").write_text(rep.html(study.title))
    return out_dir / "report.html"
