"""`mnist-lab evaluate RUN --suite ...`: how a stored run fails beyond clean accuracy.

The suites (suites.py) are measured once and stored with the run; asked again with the
same options they are read back (`--force` measures again). Figures go to a folder per run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt

from . import suite_figures as figures
from .commands import table, write_json
from .errors import UserError
from .metrics import EPSILONS, METRICS
from .record import RunRecord, SuiteResult
from .store import Store
from .suites import BY_NAME, SUITES, SuiteOptions, evaluate_run


def suite_names(arg: str) -> list[str]:
    """`all` (every suite but those asked for by name), or a comma-separated list of names."""
    names = ([n for n in SUITES if n not in BY_NAME] if arg == "all" else
             [n.strip() for n in arg.split(",") if n.strip()])
    unknown = [n for n in names if n not in SUITES]
    if unknown or not names:
        raise UserError(f"unknown suite {(unknown or [arg])[0]!r}; choose from "
                        f"{', '.join(SUITES)} or all (comma-separated for several)")
    return names


def options_from_args(args: argparse.Namespace) -> SuiteOptions:
    """The suites' options from the flags, checked."""
    epsilons = tuple(args.epsilon) if args.epsilon else EPSILONS
    if not 1 <= args.attack_images <= 10_000:
        raise UserError(f"--attack-images must be in 1..10000, got {args.attack_images}")
    if any(not 0 < e <= 1 for e in epsilons):
        raise UserError("--epsilon values must be in (0, 1]: pixel scale [0, 1]")
    for flag in ("pgd_steps", "strong_steps", "restarts"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    return SuiteOptions(corruption_seed=args.corruption_seed, attack_images=args.attack_images,
                        epsilons=tuple(sorted(set(epsilons))), pgd_steps=args.pgd_steps,
                        strong_steps=args.strong_steps, restarts=args.restarts)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_figures(record: RunRecord, results: dict[str, SuiteResult], out: Path) -> list[Path]:
    """The suites' figures for one run, as PNG files in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    made = []
    draw = {"adversarial": figures.adversarial_curves, "corruptions": figures.corruption_table,
            "calibration": figures.reliability_diagrams}
    for name, result in results.items():
        if name in draw:
            made.append(_save(draw[name]([(record.model, [result])]), out / f"{name}.png"))
    if "explanations" in results:
        ex = results["explanations"]
        made.append(_save(figures.mistakes_gallery(ex, f"{record.id}: most confident "
                                                   "mistakes"), out / "mistakes.png"))
        if ex.details["saliency"]:
            made.append(_save(figures.saliency_grid(ex, f"{record.id}: integrated gradients"),
                              out / "saliency.png"))
    return made


def _rows(results: dict[str, SuiteResult]) -> list[list[str]]:
    rows = []
    for result in results.values():
        for name, value in result.metrics.items():
            if value is not None:
                rows.append([result.suite, name, METRICS[name].format(value)])
        if result.suite == "corruptions":
            rows += [["corruptions", f"  {n}", METRICS["test_accuracy"].format(a)]
                     for n, a in result.details["per_corruption"].items()]
        if result.suite == "explanations":
            per_class = result.details["per_class_accuracy"]
            rows.append(["explanations", "per-class accuracy",
                         " ".join(f"{c}:{100 * a:.1f}" for c, a in enumerate(per_class))])
        if result.suite == "masking":
            rows += [["masking", "warning", w] for w in result.details["warnings"]] or [
                ["masking", "verdict", "no sign of gradient masking in the 4 checks"]]
        if result.details.get("note"):
            rows.append([result.suite, "note", result.details["note"]])
    return rows


def cmd_evaluate_suites(args: argparse.Namespace) -> int:
    """Measure (or read back) the asked suites on a stored run; print and plot them."""
    names, options = suite_names(args.suite), options_from_args(args)
    with Store(args.runs_dir) as store:
        try:
            record = store.get(args.source)
        except UserError as e:
            raise UserError(f"{e}: suites are stored with a run, so give a stored run's id "
                            "(a checkpoint file has no run to keep them)") from None
        results = evaluate_run(store, record, names, options, args.data_dir, args.force,
                               progress=not args.json)
        out = Path(args.out) if args.out else store.root / "reports" / "runs" / record.id
    made = write_figures(record, results, out)
    if args.json:
        write_json({"run": record.id, "model": record.model,
                    "suites": {n: r.to_dict() for n, r in results.items()},
                    "figures": [str(p) for p in made]})
        return 0
    print(f"{record.id}: {record.model} on {record.dataset}, test accuracy "
          f"{METRICS['test_accuracy'].format(record.metric('test_accuracy'))}")
    print(table(["suite", "metric", "value"], _rows(results)))
    print("figures: " + ", ".join(str(p) for p in made))
    return 0
