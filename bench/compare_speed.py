"""How long `mnist-lab compare` takes over a whole study's stored runs, imports excluded.

    python bench/compare_speed.py linear-mlp --baseline "model=mlp,lr=0.1" --runs-dir RUNS

Runs the command in this process `--repeat` times after one warm-up (which pays the imports)
and prints the median wall time of the rest. It reads the store only: no re-evaluation.
"""

import argparse
import contextlib
import io
import statistics
import time

from mnist_lab.cli import main


def run(argv: list[str]) -> float:
    """Seconds one `compare` takes, its output swallowed."""
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"compare failed ({code}): {' '.join(argv)}")
    return time.perf_counter() - t


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study")
    p.add_argument("--baseline", required=True)
    p.add_argument("--runs-dir", required=True)
    p.add_argument("--repeat", type=int, default=5)
    return p.parse_args()


if __name__ == "__main__":
    args = parse()
    argv = ["compare", args.study, "--baseline", args.baseline, "--runs-dir", args.runs_dir]
    run(argv)  # warm-up: imports, first open of the store
    times = [run(argv) for _ in range(args.repeat)]
    print(f"compare {args.study} --baseline {args.baseline}: median {statistics.median(times):.3f}"
          f" s over {args.repeat} runs (min {min(times):.3f}, max {max(times):.3f})")
