"""Figures of the evaluation suites, for one run (`evaluate --suite`) or a study's variants
(plot kinds `adversarial`, `corruptions`, `reliability`, `gallery` in study files).

Each figure takes `series`: (label, [SuiteResult of each seed]) pairs, and returns a Figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .document import Report
from .plots import complete, register_plot
from .record import SuiteResult

Series = list[tuple[str, list[SuiteResult]]]


def adversarial_curves(series: Series) -> plt.Figure:
    """Accuracy against L-inf epsilon: PGD solid, FGSM dashed, error bars = std over seeds."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, results) in enumerate(series):
        for attack, style in (("pgd", "-"), ("fgsm", "--")):
            curves = [r.details["curves"][attack] for r in results]
            eps = sorted(curves[0], key=float)
            acc = 100 * np.array([[c[e] for e in eps] for c in curves])
            ax.errorbar([float(e) for e in eps], acc.mean(0), acc.std(0, ddof=1)
                        if len(acc) > 1 else None, linestyle=style, marker="o", capsize=3,
                        color=f"C{i}", label=f"{label} {attack.upper()}")
    images = series[0][1][0].details["images"]
    ax.set(xlabel="L∞ ε (pixel scale [0, 1])", ylabel="accuracy (%)", ylim=(-2, 102),
           title=f"accuracy under attack, first {images:,} test images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig


def corruption_table(series: Series) -> plt.Figure:
    """Accuracy on each corruption (and clean) per variant, mean over seeds: a shaded table,
    which stays readable with many variants where grouped bars would not."""
    names = ["clean", *series[0][1][0].details["per_corruption"]]
    acc = np.array([[100 * np.mean([r.details["clean_accuracy"] if n == "clean"
                                    else r.details["per_corruption"][n] for r in results])
                     for _, results in series] for n in names])
    fig, ax = plt.subplots(figsize=(2.2 + 0.95 * len(series), 0.36 * len(names) + 1.2))
    image = ax.imshow(acc, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    for (i, j), a in np.ndenumerate(acc):
        ax.text(j, i, f"{a:.1f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(series)), [label for label, _ in series], rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.axhline(0.5, color="k", linewidth=1)  # clean above the line, corruptions below
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="test accuracy (%)")
    ax.set_title("accuracy per corruption (%, mean over seeds)")
    return fig


def _pooled(results: list[SuiteResult], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin centres, accuracy, count) of the seeds' reliability tables, pooled by count."""
    tables = [r.details[key] for r in results if r.details.get(key)]
    edges = np.array(tables[0]["edges"])
    counts = np.sum([t["counts"] for t in tables], axis=0)
    correct = np.sum([[(a or 0) * n for a, n in zip(t["accuracy"], t["counts"], strict=True)]
                      for t in tables], axis=0)
    return (edges[:-1] + edges[1:]) / 2, np.divide(correct, np.maximum(counts, 1)), counts


def reliability_diagrams(series: Series) -> plt.Figure:
    """Accuracy per confidence bin against the diagonal, before and after temperature
    scaling; one panel per variant, four to a row."""
    columns = min(len(series), 4)  # wider than four panels is hard to read on a page
    rows = -(-len(series) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(series):]:
        ax.axis("off")
    for ax, (label, results) in zip(axes.flat, series, strict=False):
        centre, acc, n = _pooled(results, "reliability")
        width = centre[1] - centre[0]
        ax.bar(centre[n > 0], acc[n > 0], width, alpha=0.6, edgecolor="k", label="as trained")
        if all(r.details.get("reliability_scaled") for r in results):
            centre_t, acc_t, n_t = _pooled(results, "reliability_scaled")
            ax.step(centre_t[n_t > 0], acc_t[n_t > 0], where="mid", color="C3",
                    label="temperature-scaled")
        ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
        ece = np.mean([r.metrics["ece"] for r in results])
        ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
               title=f"{label}\nECE {100 * ece:.2f}%")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def mistakes_gallery(result: SuiteResult, title: str, columns: int = 8) -> plt.Figure:
    """The most confident mistakes: image, true → predicted, probability."""
    mistakes = result.details["mistakes"]
    rows = max(1, -(-len(mistakes) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.55 * rows + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, mistakes, strict=False):
        ax.imshow(np.array(m["image"]), cmap="gray_r")
        ax.set_title(f"{m['true']}→{m['pred']} ({m['probability']:.0%})", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig


def saliency_grid(result: SuiteResult, title: str) -> plt.Figure:
    """Test digits over their integrated-gradients map for the predicted class (red: evidence
    for it, blue: against)."""
    maps = result.details["saliency"]
    fig, axes = plt.subplots(2, len(maps), figsize=(1.3 * len(maps), 3.0), squeeze=False)
    for i, m in enumerate(maps):
        attr = np.array(m["saliency"])
        bound = np.abs(attr).max() or 1.0
        axes[0, i].imshow(np.array(m["image"]), cmap="gray_r")
        axes[0, i].set_title(f"{m['true']} → {m['pred']}", fontsize=8)
        axes[1, i].imshow(attr, cmap="bwr", vmin=-bound, vmax=bound)
        for ax in axes[:, i]:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return fig


def _series(block: dict, variants: list[str], groups: dict, suite: str) -> Series:
    """(variant, its seeds' results of the suite), for variants where every seed has it."""
    out = []
    for v in variants:
        runs = complete(groups, block, v)
        if runs and all(suite in r.suites for r in runs):
            out.append((v, [r.suites[suite] for r in runs]))
    return out


def _study_plot(kind: str, suite: str, draw, caption: str) -> None:
    """Register plot kind `kind`: the suite's figure over the block's variants."""
    def plot(rep: Report, spec: dict, block: dict, variants: list[str], groups: dict) -> None:
        series = _series(block, variants, groups, suite)
        if not series:
            rep.text(f"({block['name']}: no stored `{suite}` results to plot; `study run` "
                     "measures the block's `evaluate` suites)")
            return
        rep.figure(draw(series), f"{block['name']}: {caption}")
    plot.__name__ = kind
    register_plot(plot)


_study_plot("adversarial", "adversarial", adversarial_curves,
            "accuracy under FGSM and PGD against ε; error bars: std over seeds")
_study_plot("corruptions", "corruptions", corruption_table,
            "accuracy per corruption, mean over seeds")
_study_plot("reliability", "calibration", reliability_diagrams,
            "reliability diagrams, seeds pooled")


@register_plot
def _gallery(rep: Report, spec: dict, block: dict, variants: list[str], groups: dict) -> None:
    for v, results in _series(block, variants, groups, "explanations"):
        first = results[0]  # the first seed's: galleries are looked at, not averaged
        rep.figure(mistakes_gallery(first, f"{v}: most confident mistakes (true→predicted)"),
                   f"{v}: the most confident mistakes of one seed")
        if first.details["saliency"]:
            rep.figure(saliency_grid(first, f"{v}: integrated gradients for the predicted "
                                     "class"), f"{v}: what the model looked at (red: evidence "
                       "for the predicted class, blue: against)")
