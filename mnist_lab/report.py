"""Study reports from stored runs only: Markdown + self-contained HTML, tables and plots.

For each block of the study file: a table of mean ± std over seeds for the block's `table`
metrics beside the source document's figures (`reference`) and the difference; the winner of a
`select_by` search; and the block's `plots` (curves over epochs, sweeps over a config value,
confusion matrices). Nothing here trains or reaches into a training loop.
"""

from __future__ import annotations

import base64
import html
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .metrics import METRICS, most_confused  # noqa: E402
from .record import RunRecord  # noqa: E402
from .study import Run, Study, expand  # noqa: E402


def fmt(name: str, x: float | None) -> str:
    """A metric's value in its registered format."""
    return METRICS[name].format(x)


def mean_std(name: str, xs: list[float | None]) -> str:
    """'mean ± std (n)' in the metric's format; std is the sample standard deviation."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    if len(xs) == 1:
        return fmt(name, xs[0])
    mean = fmt(name, statistics.mean(xs))
    return f"{mean} ± {METRICS[name].format_spread(mean, statistics.stdev(xs))} (n={len(xs)})"


def _scale(name: str) -> tuple[float, str]:
    """Plots show fractions as percentages, as the tables do: (factor, axis label)."""
    return (100.0, f"{name} (%)") if METRICS[name].kind == "fraction" else (1.0, name)


class Report:
    """Elements (headings, text, tables, images) rendered to Markdown and HTML alike."""

    def __init__(self, out_dir: Path):
        self.out_dir, self.parts, self.n_images = out_dir, [], 0

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(("h", level, text))

    def text(self, text: str) -> None:
        self.parts.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.parts.append(("table", header, rows))

    def figure(self, fig: plt.Figure, caption: str) -> None:
        self.n_images += 1
        path = self.out_dir / f"plot{self.n_images:02d}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.parts.append(("img", path, caption))

    def markdown(self) -> str:
        out = []
        for kind, *rest in self.parts:
            if kind == "h":
                out.append("#" * rest[0] + " " + rest[1])
            elif kind == "p":
                out.append(rest[0])
            elif kind == "table":
                header, rows = rest
                out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                out += ["| " + " | ".join(r) + " |" for r in rows]
            else:
                out.append(f"![{rest[1]}]({rest[0].name})")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        body = []
        for kind, *rest in self.parts:
            if kind == "h":
                body.append(f"<h{rest[0]}>{html.escape(rest[1])}</h{rest[0]}>")
            elif kind == "p":
                body.append(f"<p>{html.escape(rest[0])}</p>")
            elif kind == "table":
                header, rows = rest
                head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r)
                                + "</tr>" for r in rows)
                body.append(f"<table><tr>{head}</tr>{cells}</table>")
            else:
                data = base64.b64encode(rest[0].read_bytes()).decode()
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="">'
                            f"<figcaption>{html.escape(rest[1])}</figcaption></figure>")
        style = ("body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;"
                 "padding:0 1em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px "
                 "solid #ccc;padding:.3em .6em;text-align:right}img{max-width:100%}")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>"
                f"{html.escape(title)}</title><style>{style}</style></head><body>"
                + "\n".join(body) + "</body></html>")


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


def _complete(groups: dict, block: dict, variant: str) -> list[RunRecord]:
    return [r for r in groups.get((block["name"], variant), []) if r.status == "complete"]


def _table(rep: Report, block: dict, variants: list[str], groups: dict,
           expected: Counter, quick: bool) -> None:
    metrics = block.get("table", ["test_accuracy"])
    refs = {} if quick else block.get("reference", {})  # one quick epoch is not comparable
    header, rows = ["variant", "runs"], []
    for m in metrics:
        header += [m] + (["source", "Δ"] if any(m in refs.get(v, {}) for v in variants) else [])
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
        rows.append(row)
    rep.table(header, rows)


def _select(rep: Report, block: dict, variants: list[str], groups: dict) -> None:
    by = block["select_by"]
    scored = [(statistics.mean(r.metric(by) for r in ok), v, ok) for v in variants
              if (ok := _complete(groups, block, v))]
    if not scored:
        return
    best, variant, ok = max(scored, key=lambda t: t[0])
    test = mean_std("test_accuracy", [r.metric("test_accuracy") for r in ok])
    rep.text(f"Selected by {by} ({fmt(by, best)}): {variant}; its test accuracy: {test}."
             + (f" Source: {block['selected_reference']}." if "selected_reference" in block
                else ""))


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


def _sweep(rep: Report, spec: dict, block: dict, variants: list[str], groups: dict) -> None:
    x, series = spec["x"], spec.get("series")
    ok = [r for v in variants for r in _complete(groups, block, v)]
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


def _confusion(rep: Report, spec: dict, block: dict, variants: list[str], groups: dict) -> None:
    for v in variants:
        ok = [r for r in _complete(groups, block, v) if r.classification]
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


PLOTS = {"curves": _curves, "sweep": _sweep, "confusion": _confusion}


def write_report(study: Study, records: list[RunRecord], out_dir: Path,
                 quick: bool = False) -> Path:
    """Write report.md, report.html and the PNG plots into out_dir; return the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = Report(out_dir)
    runs = expand(study, quick)
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
        variants = order[block["name"]]
        rep.heading(block.get("title", block["name"]))
        if block.get("notes"):
            rep.text(block["notes"].strip())
        _table(rep, block, variants, groups, expected, quick)
        if "select_by" in block:
            _select(rep, block, variants, groups)
        for spec in block.get("plots", []):
            PLOTS[spec["kind"]](rep, spec, block, variants, groups)
    (out_dir / "report.md").write_text(rep.markdown())
    (out_dir / "report.html").write_text(rep.html(study.title))
    return out_dir / "report.html"
