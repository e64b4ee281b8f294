"""The MNIST-C corruptions on real test digits, as a PNG grid; optionally, the full build's time.

    python bench/corruption_examples.py                          # docs/img/corruptions.png
    python bench/corruption_examples.py --time                   # and time all 10k x 15
    taskset -c 0 python bench/corruption_examples.py --time      # ... on one core

One row per corruption plus the clean digits, the first N test images in each.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mnist_lab.data import load
from mnist_lab.robust.corrupted_set import example_grid
from mnist_lab.robust.corruptions import CORRUPTIONS, corrupt


def time_build(images, seed: int) -> None:
    """Print seconds per corruption over the whole test set, then the total."""
    total = 0.0
    for name in CORRUPTIONS:
        start = time.perf_counter()
        corrupt(name, images, seed)
        seconds = time.perf_counter() - start
        total += seconds
        print(f"{name:14s} {seconds:6.2f} s", flush=True)
    print(f"{'total':14s} {total:6.2f} s for {len(images):,} images x {len(CORRUPTIONS)}")


def main() -> None:
    """Write the grid; with --time, also time the full build."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/img/corruptions.png"))
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (else $MNIST_LAB_DATA)")
    p.add_argument("-n", type=int, default=8, help="digits per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time", action="store_true", help="also time the build of the full set")
    args = p.parse_args()
    images = load("mnist", args.data_dir).test.images.numpy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    example_grid(images, args.seed, args.n).savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    if args.time:
        time_build(images, args.seed)


if __name__ == "__main__":
    main()
