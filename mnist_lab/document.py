"""A report document: headings, text, tables and figures, rendered to Markdown and to one
self-contained HTML page (figures embedded), with every value in its metric's format."""

from __future__ import annotations

import base64
import html
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .metrics import METRICS  # noqa: E402


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


class Report:
    """Elements (headings, text, lists, tables, images) rendered to Markdown and HTML alike."""

    def __init__(self, out_dir: Path):
        self.out_dir, self.parts, self.n_images = out_dir, [], 0

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(("h", level, text))

    def text(self, text: str) -> None:
        self.parts.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        self.parts.append(("ul", items))

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
            elif kind == "ul":
                out += [f"- {item}" for item in rest[0]]
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
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in rest[0])
                            + "</ul>")
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
