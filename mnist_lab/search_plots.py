"""The plots of a search block, drawn from its stored trials: the optimisation history and
Optuna's parameter importances. A report adds both to every search block."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .document import Report
from .metrics import METRICS
from .plots import register_plot
from .search import objective, rebuild


def _trials(block: dict, variants: list[str], groups: dict) -> list:
    return [r for v in variants if v.startswith("trial-") for r in groups.get((block["name"], v),
                                                                             [])]


@register_plot
def _search_history(rep: Report, spec: dict, block: dict, variants: list[str],
                    groups: dict) -> None:
    records, name = _trials(block, variants, groups), objective(block)
    done = [(int(r.label.variant[6:]), r.metric(name)) for r in records
            if r.status == "complete" and r.metric(name) is not None]
    if not done:
        return
    factor = 100.0 if METRICS[name].kind == "fraction" else 1.0
    number, value = (np.array(x, dtype=float) for x in zip(*sorted(done), strict=True))
    best = (np.maximum if METRICS[name].higher_is_better else np.minimum).accumulate(value)
    pruned = [int(r.label.variant[6:]) for r in records if r.status == "pruned"]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    y, curve = factor * value, factor * best
    # the axis spans the best-so-far curve and what lies near it: a diverged trial at 10%
    # would flatten every difference that matters; such trials sit on the edge as triangles
    edge = curve.min() - 0.5 * (curve.max() - curve.min() + 1e-9)
    if not METRICS[name].higher_is_better:
        edge = curve.max() + 0.5 * (curve.max() - curve.min() + 1e-9)
    off = y < edge if METRICS[name].higher_is_better else y > edge
    ax.plot(number[~off], y[~off], "o", label="complete trial")
    if off.any():
        ax.plot(number[off], np.full(off.sum(), edge), "v", color="C3",
                label="complete, off the axis")
    ax.step(number, curve, where="post", label="best so far")
    for x in pruned:  # where the pruner stopped a trial: a tick on the axis
        ax.axvline(x, color="0.8", linewidth=0.8, zorder=0)
    ax.set(xlabel="trial", ylabel=f"{name}{' (%)' if factor == 100 else ''}",
           title=f"{block['name']}: optimisation history ({len(pruned)} pruned, grey lines)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    rep.figure(fig, f"{block['name']}: {name} of each trial and the best so far")


@register_plot
def _importances(rep: Report, spec: dict, block: dict, variants: list[str],
                 groups: dict) -> None:
    import optuna

    study = rebuild(block, _trials(block, variants, groups))
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) < 2 or len(block["search"]["space"]) < 2:
        rep.text(f"({block['name']}: parameter importances need 2 complete trials and 2 "
                 "parameters)")
        return
    found = optuna.importance.get_param_importances(study)  # fANOVA, Optuna's default
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(found) + 1.2))
    ax.barh(list(found)[::-1], list(found.values())[::-1])
    ax.set(xlabel="importance (fANOVA, sums to 1)",
           title=f"{block['name']}: parameter importances")
    ax.grid(alpha=0.3, axis="x")
    rep.figure(fig, f"{block['name']}: how much of the objective's variance each parameter "
               "explains over the trials")
