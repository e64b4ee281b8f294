"""What a training run pays before its first batch: imports, then the data in memory.

Each measurement is a fresh process. The first one starts with an empty cache folder (so it
decompresses the .gz files and writes the decoded cache); the rest find the cache. Prints a
Markdown table (median and range) and the modules the training path imports that are heavy.

    python bench/startup.py --repeats 5 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

# Run in the child: times from interpreter start to imports done and to data loaded.
CHILD = """
import json, sys, time
t0 = time.perf_counter()
import mnist_lab.commands, mnist_lab.train
t1 = time.perf_counter()
from mnist_lab.data import load
load("mnist", sys.argv[1])
t2 = time.perf_counter()
heavy = sorted(m for m in ("sklearn", "scipy", "pandas", "matplotlib", "fastapi", "optuna",
                           "mlflow", "ray", "captum") if m in sys.modules)
print(json.dumps({"imports_s": t1 - t0, "data_s": t2 - t1, "heavy": heavy}))
"""


def measure(data_dir: str, cache: str) -> dict:
    """One fresh process with XDG_CACHE_HOME=cache; its timings."""
    env = {**os.environ, "XDG_CACHE_HOME": cache}
    out = subprocess.run([sys.executable, "-c", CHILD, data_dir], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    """Median (min–max) in seconds."""
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    """Measure and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="warm-cache processes to time")
    ap.add_argument("--data-dir", default=os.environ.get("MNIST_LAB_DATA"),
                    help="folder holding mnist/ (default: $MNIST_LAB_DATA)")
    args = ap.parse_args()
    if not args.data_dir:
        ap.error("--data-dir or $MNIST_LAB_DATA is needed")
    with tempfile.TemporaryDirectory() as cache:
        cold = measure(args.data_dir, cache)
        warm = [measure(args.data_dir, cache) for _ in range(args.repeats)]
    print("| cache | processes | imports (s) | data load (s) |")
    print("|---|---|---|---|")
    print(f"| empty (gunzip, write cache) | 1 | {cold['imports_s']:.2f} | {cold['data_s']:.2f} |")
    print(f"| decoded cache | {len(warm)} | {spread([w['imports_s'] for w in warm])} | "
          f"{spread([w['data_s'] for w in warm])} |")
    print(f"heavy modules imported by the training path: {', '.join(cold['heavy']) or 'none'}")


if __name__ == "__main__":
    main()
