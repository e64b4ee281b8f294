"""Packing's pay: K seeds of a config trained one after another vs as one pack, on one thread.

A study on 2 cores runs 2 workers of one thread each, so the one-thread ratio is what a
study gains. Each side trains the same runs (the same epochs, evaluation included); the table
gives the wall time of each and the speed-up.

    python bench/pack_speed.py --models compact_step3 fast_cnn mlp --seeds 3 --subset 20000
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from mnist_lab.config import TrainConfig
from mnist_lab.data import load
from mnist_lab.train import train
from mnist_lab.train_pack import pack_problem, train_pack


def timed(fn) -> float:
    """Wall seconds of fn()."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    """Time each model's seeds alone and packed; print a Markdown table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["compact_step3", "fast_cnn", "mlp"])
    p.add_argument("--seeds", type=int, default=3, help="K: runs in the pack")
    p.add_argument("--subset", type=int, default=20000, help="training images per run")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--data-dir")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load("mnist", args.data_dir)
    print("| model | K | alone s | packed s | speed-up |\n|---|---|---|---|---|")
    for model in args.models:
        base = TrainConfig(model=model, epochs=args.epochs, subset=args.subset, threads=1,
                           batch_size=args.batch_size)
        cfgs = [dataclasses.replace(base, seed=s) for s in range(args.seeds)]
        if (problem := pack_problem(cfgs)) is not None:
            print(f"| {model} | — | — | — | does not pack: {problem} |")
            continue
        alone = timed(lambda: [train(c, data) for c in cfgs])  # noqa: B023 - called at once
        packed = timed(lambda: train_pack(cfgs, data))  # noqa: B023
        print(f"| {model} | {args.seeds} | {alone:.1f} | {packed:.1f} | {alone / packed:.2f}× |")


if __name__ == "__main__":
    main()
