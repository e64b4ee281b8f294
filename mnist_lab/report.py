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

from .metrics import most_confused  # noqa: E402
from .studies import Run, Study, expand  # noqa: E402


def value(record: dict, name: str) -> float | None:
    """A metric of a record: top-level field, `metrics.X`, or the last epoch's history value."""
    if name.startswith("metrics."):
        return (record.get("metrics") or {}).get(name.split(".", 1)[1])
    if name in record:
        return record[name]
    return record["history"][-1].get(name) if record.get("history") else None


def fmt(name: str, x: float | None) -> str:
    """Human format for a metric value."""
    if x is None:
        return "—"
    if name == "params" or name.endswith("count"):
        return f"{x:,.0f}"
    if any(k in name for k in ("acc", "precision", "recall", "f1", "gap")):
        return f"{100 * x:.2f}%"
    if "loss" in name:
        return f"{x:.4f}"
    return f"{x:.1f}" if "second" in name else f"{x:.4g}"


def mean_std(name: str, xs: list[float]) -> str:
    """'mean ± std (n)' in the metric's format."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    if len(xs) == 1:
        return fmt(name, xs[0])
    mean, sd = fmt(name, statistics.mean(xs)), statistics.stdev(xs)
    if mean.endswith("%"):
        spread = f"{100 * sd:.2f}"
    elif "e" in mean:
        spread = fmt(name, sd)
    else:  # as many decimals as the mean shows: 27.62 ± 0.53, not 27.62 ± 0.5342
        spread = f"{sd:,.{len(mean.partition('.')[2])}f}"
    return f"{mean} ± {spread} (n={len(xs)})"


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


def _group(runs: list[Run], records: list[dict]) -> tuple[dict, dict, Counter]:
    """Records of each (block, variant) matched by config key, variant order per block, and
    how many runs the study file expects of each (block, variant).

    Matching by key rather than by the stored labels lets blocks share a run (the same config
    in two tables) and survives renaming a variant.
    """
    by_key = {r["key"]: r for r in records}  # oldest first, so the latest attempt wins
    groups, order, expected = defaultdict(list), defaultdict(list), Counter()
    for run in runs:
        expected[(run.block, run.variant)] += 1
        if run.variant not in order[run.block]:
            order[run.block].append(run.variant)
        if (record := by_key.get(run.config.key())) is not None:
            groups[(run.block, run.variant)].append(record)
    return groups, order, expected


def _table(rep: Report, block: dict, variants: list[str], groups: dict,
           expected: Counter) -> None:
    metrics = block.get("table", ["test_accuracy"])
    refs = block.get("reference", {})
    header, rows = ["variant", "runs"], []
    for m in metrics:
        header += [m] + (["source", "Δ"] if any(m in refs.get(v, {}) for v in variants) else [])
    for v in variants:
        runs = groups.get((block["name"], v), [])
        ok = [r for r in runs if r["status"] == "complete"]
        # complete/expected, so a study still running shows what it lacks
        bad = Counter(r["status"] for r in runs if r["status"] != "complete")
        row = [v, f"{len(ok)}/{expected[(block['name'], v)]}"
               + "".join(f", {n} {s}" for s, n in sorted(bad.items()))]
        for m in metrics:
            xs = [value(r, m) for r in ok]
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
    scored = [(statistics.mean(value(r, by) for r in ok), v, ok) for v in variants
              if (ok := [r for r in groups.get((block["name"], v), [])
                         if r["status"] == "complete"])]
    if not scored:
        return
    best, variant, ok = max(scored, key=lambda t: t[0])
    test = mean_std("test_accuracy", [r["test_accuracy"] for r in ok])
    rep.text(f"Selected by {by} ({fmt(by, best)}): {variant}; its test accuracy: {test}."
             + (f" Source: {block['selected_reference']}." if "selected_reference" in block
                else ""))


def _curves(rep: Report, spec: dict, block: dict, variants: list[str], groups: dict) -> None:
    metrics, facet = spec["metrics"], spec.get("facet")
    runs = [r for v in variants for r in groups.get((block["name"], v), [])
            if r["history"] and r["status"] != "failed"]
    facets = sorted({r["config"][facet] for r in runs}) if facet else [None]
    for fv in facets:
        fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
        for ax, m in zip(axes[0], metrics, strict=True):
            shown = []  # values from epoch `zoom_from` on: what the y-axis is fitted to
            for v in variants:
                rs = [r for r in groups.get((block["name"], v), []) if r in runs
                      and (facet is None or r["config"][facet] == fv)]
                if not rs:
                    continue
                n = min(len(r["history"]) for r in rs)
                ys = np.array([[h.get(m) or np.nan for h in r["history"][:n]] for r in rs])
                epochs = np.arange(1, n + 1)
                label = ",".join(p for p in v.split(",") if not p.startswith(f"{facet}="))
                ax.plot(epochs, ys.mean(0), marker="." if n < 20 else None, label=label or v)
                if len(rs) > 1:
                    ax.fill_between(epochs, ys.min(0), ys.max(0), alpha=0.2)
                later = ys[:, spec.get("zoom_from", 1) - 1:]
                if later.size:  # a quick run may end before zoom_from
                    shown.append(later)
            ax.set(xlabel="epoch", ylabel=m, yscale=spec.get("yscale", "linear"))
            if "zoom_from" in spec and shown:  # the first epochs would flatten the differences
                lo, hi = np.nanmin([a.min() for a in shown]), np.nanmax([a.max() for a in shown])
                ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=8)
        title = f"{block['name']}: " + ", ".join(metrics) + (f" ({facet}={fv})" if facet else "")
        title += f", from epoch {spec['zoom_from']}" if "zoom_from" in spec else ""
        fig.suptitle(title)
        rep.figure(fig, title + "; mean over seeds, band = min–max")


def _sweep(rep: Report, spec: dict, block: dict, variants: list[str], groups: dict) -> None:
    x, series = spec["x"], spec.get("series")
    ok = [r for v in variants for r in groups.get((block["name"], v), [])
          if r["status"] == "complete"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in sorted({r["config"].get(series) for r in ok} if series else [None], key=str):
        for m in spec["metrics"]:
            pts = defaultdict(list)
            for r in ok:
                if series is None or r["config"].get(series) == s:
                    pts[r["config"][x]].append(value(r, m))
            xs = sorted(pts)
            label = f"{s} {m}" if series else m
            ax.errorbar(xs, [np.mean(pts[k]) for k in xs], [np.std(pts[k]) for k in xs],
                        marker="o", capsize=3, label=label)
    ax.set(xscale="log" if spec.get("logx", True) else "linear", xlabel=x, ylabel="accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    rep.figure(fig, f"{block['name']}: {', '.join(spec['metrics'])} vs {x}")


def _confusion(rep: Report, spec: dict, block: dict, variants: list[str], groups: dict) -> None:
    for v in variants:
        ok = [r for r in groups.get((block["name"], v), []) if r["status"] == "complete"]
        if not ok:
            continue
        cm = np.sum([r["metrics"]["confusion_matrix"] for r in ok], axis=0)
        fig, ax = plt.subplots(figsize=(5.5, 5))
        ax.imshow(np.log1p(cm), cmap="Blues")
        for (i, j), c in np.ndenumerate(cm):
            ax.text(j, i, str(c), ha="center", va="center", fontsize=7,
                    color="white" if i == j else "black")
        ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10))
        fig.suptitle(f"{block['name']} / {v}: confusion matrix (summed over {len(ok)} seeds)")
        rep.figure(fig, f"{v}: confusion matrix, log colour scale")
        top = most_confused(cm)
        rep.text(f"{v}, most confused (true→predicted, count over seeds): "
                 + ", ".join(f"{p['true']}→{p['pred']} ({p['count']})" for p in top))


PLOTS = {"curves": _curves, "sweep": _sweep, "confusion": _confusion}


def write_report(study: Study, records: list[dict], out_dir: Path, quick: bool = False) -> Path:
    """Write report.md, report.html and the PNG plots into out_dir; return the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = Report(out_dir)
    runs = expand(study, quick)
    groups, order, expected = _group(runs, records)
    rep.heading(study.title + (" (quick mode)" if quick else ""), 1)
    keys = {run.config.key() for run in runs}
    statuses = Counter(r["status"] for r in records if r["key"] in keys)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    rep.text(f"Source: {study.source}. Runs stored: {statuses.total()} of the {len(keys)} the "
             f"study defines" + (f" ({counts})." if counts else "."))
    if study.notes:
        rep.text(study.notes.strip())
    for block in study.blocks:
        variants = order[block["name"]]
        rep.heading(block.get("title", block["name"]))
        if block.get("notes"):
            rep.text(block["notes"].strip())
        _table(rep, block, variants, groups, expected)
        if "select_by" in block:
            _select(rep, block, variants, groups)
        for spec in block.get("plots", []):
            PLOTS[spec["kind"]](rep, spec, block, variants, groups)
    (out_dir / "report.md").write_text(rep.markdown())
    (out_dir / "report.html").write_text(rep.html(study.title))
    return out_dir / "report.html"
