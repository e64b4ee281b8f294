"""The plot kinds a study block can ask for, by name: `PLOTS[kind](rep, spec, block, variants,
groups)` adds its figures to the report. Adding a kind is one registered function here."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from .document import Report
from .metrics import METRICS, most_confused
from .record import RunRecord

PLOTS: dict[str, Callable] = {}


def register_plot(fn: Callable) -> Callable:
    """Decorator: a plot kind named after its function, without the leading underscore."""
    PLOTS[fn.__name__.lstrip("_")] = fn
    return fn


def complete(groups: dict, block: dict, variant: str) -> list[RunRecord]:
    """The complete runs of a block's variant."""
    return [r for r in groups.get((block["name"], variant), []) if r.status == "complete"]


def _scale(name: str) -> tuple[float, str]:
    """Plots show fractions as percentages, as the tables do: (factor, axis label)."""
    return (100.0, f"{name} (%)") if METRICS[name].kind == "fraction" else (1.0, name)


def _curve_panel(ax: plt.Axes, spec: dict, m: str, series: list[tuple[str, list]]) -> None:
    """One metric over epochs: a line per variant (mean over seeds), a band where seeds vary."""
    factor, label = _scale(m)
    shown = []  # values from epoch `zoom_from` on: what the y-axis is fitted to
    for name, rs in series:
        n = min(len(r.history) for r in rs)
        ys = factor * np.array([[getattr(e, m) if getattr(e, m) is not None else np.nan
                                 for e in r.history[:n]] for r in rs])
        epochs = np.arange(1, n + 1)
        ax.plot(epochs, ys.mean(0), marker="." if n < 20 else None, label=name)
        if len(rs) > 1:
            ax.fill_between(epochs, ys.min(0), ys.max(0), alpha=0.2)
        later = ys[:, spec.get("zoom_from", 1) - 1:]
        if later.size:  # a quick run may end before zoom_from
            shown.append(later)
    ax.set(xlabel="epoch", ylabel=label, yscale=spec.get("yscale", "linear"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not 1.5
    if "zoom_from" in spec and shown:  # the first epochs would flatten the differences
        lo, hi = np.nanmin([a.min() for a in shown]), np.nanmax([a.max() for a in shown])
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)  # on every panel: each can be read alone


@register_plot
def _curves(rep: Report, spec: dict, block: dict, variants: list[str], groups: dict) -> None:
    metrics, facet = spec["metrics"], spec.get("facet")
    runs = [r for v in variants for r in groups.get((block["name"], v), [])
            if r.history and r.status != "failed"]
    facets = sorted({getattr(r.config, facet) for r in runs}) if facet else [None]
    for fv in facets:
        series = []
        for v in variants:
            rs = [r for r in groups.get((block["name"], v), []) if r in runs
                  and (facet is None or getattr(r.config, facet) == fv)]
            if rs:
                label = ",".join(p for p in v.split(",") if not p.startswith(f"{facet}="))
                series.append((label or v, rs))
        if not series:
            continue
        fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
        for ax, m in zip(axes[0], metrics, strict=True):
            _curve_panel(ax, spec, m, series)
        title = f"{block['name']}: " + ", ".join(metrics) + (f" ({facet}={fv})" if facet else "")
        title += f", from epoch {spec['zoom_from']}" if "zoom_from" in spec else ""
        fig.suptitle(title)
        seeds = max(len(rs) for _, rs in series)
        rep.figure(fig, title + ("; mean over seeds, band = min–max" if seeds > 1
                                 else "; one seed per line"))


@register_plot
def _sweep(rep: Report, spec: dict, block: dict, variants: list[str], groups: dict) -> None:
    x, series = spec["x"], spec.get("series")
    ok = [r for v in variants for r in complete(groups, block, v)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in sorted({getattr(r.config, series) for r in ok} if series else [None], key=str):
        for m in spec["metrics"]:
            factor, _ = _scale(m)
            pts = defaultdict(list)
            for r in ok:
                if series is None or getattr(r.config, series) == s:
                    pts[getattr(r.config, x)].append(factor * r.metric(m))
            xs = sorted(pts)
            label = f"{s} {m}" if series else m
            # error bars: the sample std over seeds, as in the tables
            sd = [statistics.stdev(pts[k]) if len(pts[k]) > 1 else 0.0 for k in xs]
            ax.errorbar(xs, [np.mean(pts[k]) for k in xs], sd, marker="o", capsize=3,
                        label=label)
    unit = " (%)" if all(METRICS[m].kind == "fraction" for m in spec["metrics"]) else ""
    ax.set(xscale="log" if spec.get("logx", True) else "linear", xlabel=x,
           ylabel=", ".join(spec["metrics"]) + unit)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    rep.figure(fig, f"{block['name']}: {', '.join(spec['metrics'])} vs {x}; error bars: "
               "std over seeds")


@register_plot
def _confusion(rep: Report, spec: dict, block: dict, variants: list[str], groups: dict) -> None:
    for v in variants:
        ok = [r for r in complete(groups, block, v) if r.classification]
        if not ok:
            continue
        cm = np.sum([r.classification.confusion_matrix for r in ok], axis=0)
        fig, ax = plt.subplots(figsize=(6.2, 5))
        shade = np.log1p(cm)
        image = ax.imshow(shade, cmap="Blues")
        bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ticks = [t for t in (0, 1, 10, 100, 1000, 10000) if t <= cm.max()]
        bar.set_ticks(np.log1p(ticks), labels=[f"{t:,}" for t in ticks])
        bar.set_label("count (log scale)")
        for (i, j), c in np.ndenumerate(cm):  # white on the dark half of the scale
            dark = shade[i, j] > 0.55 * shade.max()
            ax.text(j, i, str(c), ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
        ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10))
        fig.suptitle(f"{block['name']} / {v}: confusion matrix (summed over {len(ok)} seeds)")
        rep.figure(fig, f"{v}: confusion matrix, log colour scale")
        top = most_confused(cm)
        rep.text(f"{v}, most confused (true→predicted, count over seeds): "
                 + ", ".join(f"{c.true}→{c.pred} ({c.count})" for c in top))


@register_plot
def _pareto(rep: Report, spec: dict, block: dict, variants: list[str], groups: dict) -> None:
    """Test accuracy against parameters (log axis): a point per variant of the named blocks
    (mean ± std over seeds), and the spec's `anchors` (published figures), labelled: crosses,
    or hollow triangles where the source picked the epoch on the test set."""
    names = spec.get("blocks", [block["name"]])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ours = [(ok[0].params, v, [100 * r.metric("test_accuracy") for r in ok])
            for (b, v), runs in groups.items()
            if (ok := [r for r in runs if b in names and r.status == "complete" and r.params])]
    for i, (params, v, acc) in enumerate(sorted(ours, key=lambda o: (o[0], np.mean(o[2])))):
        ax.errorbar(params, np.mean(acc), statistics.stdev(acc) if len(acc) > 1 else 0.0,
                    marker="o", capsize=3, color="C0")
        # level with its point, on alternate sides: neighbours of one budget would overlap
        ax.annotate(v, (params, np.mean(acc)), textcoords="offset points", va="center",
                    xytext=(6, 0) if i % 2 else (-6, 0), ha="left" if i % 2 else "right",
                    fontsize=7, color="C0")
    for a in spec.get("anchors", []):
        on_test = a.get("best_epoch_on_test", False)  # hollow: the source picked it on test
        ax.plot(a["params"], a["accuracy"], "^" if on_test else "x", color="C3",
                mfc="none" if on_test else "C3")
        # below and to the right: our labels sit level with our points, which often share
        # an anchor's budget and accuracy
        ax.annotate(a["label"], (a["params"], a["accuracy"]), textcoords="offset points",
                    xytext=(4, -11), fontsize=7, color="C3")
    ax.plot([], [], "x", color="C3", label="published, final or stated epoch")
    ax.plot([], [], "^", color="C3", mfc="none", label="published, best epoch chosen on test")
    ax.legend(fontsize=7, loc="lower right")
    ax.set(xscale="log", xlabel="trainable parameters", ylabel="test accuracy (%)")
    ax.margins(x=0.12, y=0.1)  # room for the labels at the edges
    ax.grid(alpha=0.3, which="both")
    rep.figure(fig, "test accuracy against parameters: ours (blue, mean ± std over seeds, "
               "final epoch) and published figures (red)")
