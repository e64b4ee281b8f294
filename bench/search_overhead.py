"""The search driver's overhead per trial: a search block's wall time minus its runs' own.

    python bench/search_overhead.py --trials 12 [--pruner median] [--jobs 1]

Runs a search of `--trials` tiny trials (softmax, 1,000 images, 3 epochs, 1,000 validation
images) in a fresh store and prints the wall time of the whole search, the summed wall time the
stored runs report for themselves (training and evaluation), and the difference per trial:
asking Optuna, building each rung's trainer, writing and reading snapshots, storing records.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

STUDY = """
name = "overhead"
title = "search overhead"
source = "bench"
seeds = [0]

[base]
model = "softmax"
optimizer = "sgd"
scheduler = "none"
rotate = 0.0
translate = 0.0
epochs = 3
subset = 1000
val_size = 1000
normalize = false

[[blocks]]
name = "search"

[blocks.search]
n_trials = {trials}
pruner = "{pruner}"
space = {{ lr = {{ low = 0.001, high = 1.0, log = true }} }}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--pruner", default="median", choices=("none", "median", "halving"))
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--data-dir", help="dataset folder (default: $MNIST_LAB_DATA)")
    args = p.parse_args()

    from mnist_lab.config import RunContext
    from mnist_lab.runner import Executor, run_study
    from mnist_lab.store import Store
    from mnist_lab.study import load_study

    folder = Path(tempfile.mkdtemp(prefix="search-bench-"))
    path = folder / "overhead.toml"
    path.write_text(STUDY.format(trials=args.trials, pruner=args.pruner))
    store, ctx = Store(folder / "runs"), RunContext(data_dir=args.data_dir)
    started = time.perf_counter()
    counts = run_study(load_study(path), store, ctx, executor=Executor(jobs=args.jobs))
    wall = time.perf_counter() - started
    runs = store.runs(study="overhead")
    own = sum(r.timing.wall_seconds or 0 for r in runs)
    print(json.dumps({"trials": args.trials, "pruner": args.pruner, "jobs": args.jobs,
                      "counts": counts, "search_wall_s": round(wall, 2),
                      "runs_own_wall_s": round(own, 2),
                      "overhead_per_trial_s": round((wall - own / args.jobs) / args.trials, 3)}))


if __name__ == "__main__":
    main()
