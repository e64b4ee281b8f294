"""Time to a target test accuracy: mnist-lab's training path against the usual pipeline.

Each measurement is a fresh process, timed from its start (imports and data loading included):
`mnist-lab train --stop-at-accuracy T --json ...` for ours, `bench/reference_pipeline.py` for
the references (pytorch/examples, and tuomaso/train_mnist_fast's recipe in the same data path).
Seeds alternate between the pipelines so machine drift hits all alike. Prints a Markdown table
(median and range over seeds) and writes all records as JSON lines.

Machines differ, so every time is also given in reference epochs: divided by the wall time of
one epoch (its training and its test pass) of the pytorch/examples pipeline, the median over
this run's seeds.

    python bench/time_to_accuracy.py --target 0.99 --seeds 0 1 2 3 4 --ours "--preset fast-99.0"
    python bench/time_to_accuracy.py --tiny          # seconds; what CI runs so this cannot rot
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_json(cmd: list[str]) -> dict:
    """Run a command that prints one JSON object last on stdout; return it."""
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"benchmark command failed ({out.returncode}): {shlex.join(cmd)}\n"
                 f"{out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def data_flag(args: argparse.Namespace) -> list[str]:
    """--data-dir passed through to both pipelines, if given."""
    return ["--data-dir", args.data_dir] if args.data_dir else []


def ours(args: argparse.Namespace, seed: int) -> dict:
    """mnist-lab train, stopped at the target."""
    cmd = [sys.executable, "-m", "mnist_lab.cli", "train", "--json", "--no-progress",
           "--stop-at-accuracy", str(args.target), "--seed", str(seed),
           "--runs-dir", args.runs_dir, *data_flag(args), *shlex.split(args.ours)]
    record = run_json(cmd)  # a RunRecord's JSON
    final, timing = record["final"], record["timing"]
    return {"pipeline": "mnist-lab", "seed": seed, "model": record["config"]["model"],
            "reached_target": timing["seconds_to_target"] is not None,
            **{k: final[k] for k in ("params", "epochs_run", "test_accuracy")},
            **{k: timing[k] for k in ("seconds_to_target", "train_images_per_s",
                                      "infer_images_per_s", "peak_rss_mb")}}


def reference(args: argparse.Namespace, recipe: str, seed: int) -> dict:
    """bench/reference_pipeline.py with one recipe, stopped at the target."""
    flags = shlex.split(args.reference_flags) + (["--epochs", str(args.reference_epochs)]
                                                 if recipe == "examples" else [])
    cmd = [sys.executable, str(HERE / "reference_pipeline.py"), "--recipe", recipe,
           "--target", str(args.target), "--seed", str(seed), *data_flag(args), *flags]
    return run_json(cmd)


def reference_epoch(rows: list[dict]) -> float | None:
    """Median wall time of the examples pipeline's first epoch (train and test pass)."""
    epochs = [r["history"][0]["seconds"] for r in rows if r["pipeline"] == "reference/examples"]
    return statistics.median(epochs) if epochs else None


def summarise(rows: list[dict]) -> dict:
    """Median and range of time to target, and median throughput, over seeds.

    A seed that never reaches the target counts as slower than any that does, so the median
    is 'not reached' (None) when fewer than half of the seeds get there.
    """
    times = [r["seconds_to_target"] for r in rows if r["reached_target"]]
    ranked = sorted(times) + [math.inf] * (len(rows) - len(times))
    median = statistics.median_high(ranked)
    return {
        "pipeline": rows[0]["pipeline"], "model": rows[0]["model"],
        "reached": f"{len(times)}/{len(rows)}",
        "median_s": None if math.isinf(median) else median,
        "min_s": min(times, default=None), "max_s": max(times, default=None),
        "train_img_s": statistics.median(r["train_images_per_s"] for r in rows),
        "infer_img_s": statistics.median(r["infer_images_per_s"] for r in rows),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
    }


def table(summaries: list[dict], target: float, ref_epoch: float | None) -> str:
    """Markdown table of the summaries, in seconds and reference epochs, and the speed-up of
    ours over each reference."""
    fmt = "{:.1f}".format
    lines = [f"Time to {target:.2%} test accuracy ({platform.processor() or platform.machine()}, "
             f"{date.today()}); one reference epoch (pytorch/examples) = "
             f"{fmt(ref_epoch) + ' s' if ref_epoch else 'not measured'}:", "",
             "| pipeline | model | reached | median s | range s | ref. epochs | train img/s "
             "| infer img/s | peak MB |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        rng = f"{fmt(s['min_s'])}–{fmt(s['max_s'])}" if s["min_s"] else "—"
        med = fmt(s["median_s"]) if s["median_s"] else "—"
        ratio = f"{s['median_s'] / ref_epoch:.2f}" if s["median_s"] and ref_epoch else "—"
        lines.append(f"| {s['pipeline']} | {s['model']} | {s['reached']} | {med} | {rng} | "
                     f"{ratio} | {s['train_img_s']:.0f} | {s['infer_img_s']:.0f} | "
                     f"{s['peak_rss_mb']:.0f} |")
    ours = summaries[0]
    for other in summaries[1:]:
        if ours["median_s"] and other["median_s"]:
            lines.append(f"\nSpeed-up over {other['pipeline']}: "
                         f"{other['median_s'] / ours['median_s']:.1f}×")
    return "\n".join(lines)


def main() -> None:
    """Parse flags, run every pipeline over the seeds, print the table."""
    p = argparse.ArgumentParser(description="Time to target accuracy, ours vs the usual "
                                "PyTorch pipeline.")
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ours", default="", help="extra `mnist-lab train` flags (the recipe)")
    p.add_argument("--references", nargs="*", default=["examples", "tuomaso"],
                   choices=("examples", "tuomaso"), help="reference recipes to time beside "
                   "ours (none: ours only)")
    p.add_argument("--reference-flags", default="", help="more bench/reference_pipeline.py "
                   "flags, e.g. --subset N")
    p.add_argument("--reference-seeds", type=int, help="time the references on the first N "
                   "seeds only (default: all)")
    p.add_argument("--reference-epochs", type=int, default=14,
                   help="examples: epochs at most (1: its epoch time only, the ratio's unit)")
    p.add_argument("--runs-dir", default="runs/bench", help="where our runs are stored")
    p.add_argument("--data-dir", help="dataset folder (else $MNIST_LAB_DATA, the cache)")
    p.add_argument("--out", default="bench/results.jsonl", help="JSON lines of every run")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (CI)")
    args = p.parse_args()
    if args.tiny:
        args.target, args.seeds = 0.5, [0]
        args.ours = "--subset 2000 --epochs 3 --batch-size 64 " + args.ours
        args.reference_flags = "--subset 2000 " + args.reference_flags
        args.reference_epochs = 3
    rows: dict[str, list[dict]] = {"ours": [], **{name: [] for name in args.references}}
    for seed in args.seeds:
        rows["ours"].append(ours(args, seed))
        if args.reference_seeds is None or seed in args.seeds[:args.reference_seeds]:
            for name in args.references:
                rows[name].append(reference(args, name, seed))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    everything = [r for pipeline in rows.values() for r in pipeline]
    with open(args.out, "a") as f:
        for r in everything:
            f.write(json.dumps({"target": args.target, **r}) + "\n")
    print(table([summarise(r) for r in rows.values() if r], args.target,
                reference_epoch(everything)))


if __name__ == "__main__":
    main()
