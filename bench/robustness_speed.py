"""How long the robustness suites take on a compact CNN: building the corrupted test set once,
then `evaluate RUN --suite all` with that set cached.

    python bench/robustness_speed.py --runs-dir /tmp/bench-runs     # trains a run if none given
    python bench/robustness_speed.py --run RUN_ID --runs-dir RUNS

The corrupted set is built into a fresh cache folder (XDG_CACHE_HOME is pointed at a temporary
one), so the build is timed cold. The suites' timing is the wall time of the command in this
process after the build, with `--force` so nothing stored is reused. Prints both in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a stored compact CNN run (default: train one, 1 epoch)")
    p.add_argument("--runs-dir", required=True)
    p.add_argument("--data-dir", help="dataset folder (default: $MNIST_LAB_DATA)")
    return p.parse_args()


def cli(argv: list[str]) -> tuple[float, dict]:
    """Seconds a command takes, and its --json output."""
    from mnist_lab.cli import main

    out, t = io.StringIO(), time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main([*argv, "--json"])
    if code != 0:
        raise SystemExit(f"failed ({code}): {' '.join(argv)}")
    return time.perf_counter() - t, json.loads(out.getvalue())


def main() -> None:
    args = parse()
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="bench-cache-")  # a cold build
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    common = ["--runs-dir", args.runs_dir, *data]
    run = args.run or cli(["train", "--epochs", "1", "--no-progress", *common])[1]["id"]

    import torch

    from mnist_lab.data import cache_dir, load
    from mnist_lab.robust.corrupted_set import load_or_build

    images = load("mnist", args.data_dir).test.images.numpy()
    t = time.perf_counter()
    load_or_build(images, 0, cache_dir() / "corruptions" / f"mnist-n{len(images)}-seed0.npz")
    build = time.perf_counter() - t
    seconds, result = cli(["evaluate", run, "--suite", "all", "--force", *common])
    pgd = result["suites"]["adversarial"]["metrics"]
    print(json.dumps({"run": run, "corruption_set_build_s": round(build, 1),
                      "suite_all_s": round(seconds, 1), "threads": torch.get_num_threads(),
                      "pgd_accuracy_0.1": pgd["pgd_accuracy_0.1"],
                      "corruption_accuracy": result["suites"]["corruptions"]["metrics"][
                          "corruption_accuracy"]}))


if __name__ == "__main__":
    main()
