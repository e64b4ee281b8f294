"""Which test-time augmentation pays, chosen on validation: every view set on stored runs.

    python bench/tta_views.py --study records --block 2k-validation-100 --runs-dir RUNS

For each complete stored run of the block that held images out (`val_size`), rebuilds its
hold-out (the same seeded split training used), evaluates its checkpoint on it and on the test
set with every view set of mnist_lab/tta.py, and prints per variant the mean over seeds of both
and the evaluation's images per second. Choose on the validation column; the test column is
for the record once the choice is made, not for making it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

from mnist_lab.data import holdout, input_stats, load
from mnist_lab.evaluate import evaluate
from mnist_lab.store import Store, load_checkpoint
from mnist_lab.tta import VIEW_SETS


def measure(record, data) -> dict[str, tuple[float, float, float]]:
    """View set -> (validation accuracy, test accuracy, test images per second) of one run."""
    model, cfg = load_checkpoint(record.checkpoint)
    stats, device = input_stats(cfg.dataset, cfg.normalize), torch.device("cpu")
    val = holdout(data.train, cfg.val_size, cfg.seed)[1]
    out = {}
    for name in VIEW_SETS:
        v = evaluate(model, val, stats, device, name).accuracy
        t0 = time.perf_counter()
        t = evaluate(model, data.test, stats, device, name).accuracy
        out[name] = (v, t, len(data.test) / (time.perf_counter() - t0))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True)
    p.add_argument("--block", required=True)
    p.add_argument("--runs-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with Store(args.runs_dir) as store:
        runs = [r for r in store.runs(args.study, status="complete")
                if r.label and r.label.block == args.block and r.config.val_size]
    if not runs:
        raise SystemExit(f"no complete runs with a hold-out in {args.study}/{args.block}")
    data = load(runs[0].config.dataset)
    table = defaultdict(list)
    for r in sorted(runs, key=lambda r: (r.label.variant, r.label.seed)):
        for name, row in measure(r, data).items():
            table[r.label.variant, name].append(row)
    print("| variant | views | runs | validation acc. | test acc. | test images/s |")
    print("|---|---|---|---|---|---|")
    for (variant, name), rows in table.items():
        val, test, speed = zip(*rows, strict=True)
        print(f"| {variant} | {name} | {len(rows)} | {100 * statistics.mean(val):.2f}% | "
              f"{100 * statistics.mean(test):.2f}% | {statistics.median(speed):,.0f} |")


if __name__ == "__main__":
    main()
