"""Packing's pay: K seeds of a config trained one after another vs as one pack, on one thread.

A study on 2 cores runs 2 workers of one thread each, so the one-thread ratio is what a
study gains. Each side trains the same runs (the same epochs, evaluation included); the table
gives the wall time of each, the speed-up, and the training GFLOP/s each reached (FLOPs from
torch.utils.flop_counter, as bench/levers.py counts them) against one core's fp32 peak.

    python bench/pack_speed.py --models compact_step3 fast_cnn mlp --seeds 3 --subset 20000 \
        --core-peak-gflops 78.4
    python bench/pack_speed.py --models sep_4k sep_2k conv_2k --step   # the bare step only

`--step` times only the training step (forward, backward, SGD) on a random batch, per member:
what packing could pay before batch preparation and evaluation take their share.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from mnist_lab.config import TrainConfig
from mnist_lab.data import load
from mnist_lab.models import build_model
from mnist_lab.packing import pack_model
from mnist_lab.train import train
from mnist_lab.train_pack import pack_problem, train_pack


def train_flops(cfg: TrainConfig) -> float:
    """FLOPs of one training image: forward and backward of a batch, per image."""
    model = build_model(cfg)
    x, y = torch.randn(cfg.batch_size, 1, 28, 28), torch.randint(0, 10, (cfg.batch_size,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / cfg.batch_size


def step_ms(cfg: TrainConfig, k: int, steps: int = 15) -> float:
    """Milliseconds of one training step per member: k = 1 alone, else k members packed."""
    members = [build_model(dataclasses.replace(cfg, seed=s)) for s in range(k)]
    model = (pack_model(members) if k > 1 else members[0]).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(cfg.batch_size, k, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (cfg.batch_size * k,))

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x).reshape(cfg.batch_size * k, -1), y).backward()
        opt.step()
    for _ in range(3):  # warm-up: oneDNN picks its kernels
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps * 1e3 / k


def main() -> None:
    """Time each model's seeds alone and packed; print a Markdown table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["compact_step3", "fast_cnn", "mlp"])
    p.add_argument("--seeds", type=int, default=3, help="K: runs in the pack")
    p.add_argument("--subset", type=int, default=20000,
                   help="training images per run (0: all 60,000)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--core-peak-gflops", type=float, default=78.4,
                   help="one core's fp32 peak (the dev box: 32 FLOP/cycle x 2.45 GHz)")
    p.add_argument("--data-dir")
    p.add_argument("--step", action="store_true", help="time the bare training step only")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.step:
        print("| model | K | ms per member-step alone | packed | speed-up |\n|---|---|---|---|---|")
        for model in args.models:
            cfg = TrainConfig(model=model, batch_size=args.batch_size)
            if (problem := pack_problem([cfg] * args.seeds)) is not None:
                print(f"| {model} | — | — | — | does not pack: {problem} |")
                continue
            alone, packed = step_ms(cfg, 1), step_ms(cfg, args.seeds)
            print(f"| {model} | {args.seeds} | {alone:.1f} | {packed:.1f} | "
                  f"{alone / packed:.2f}× |")
        return
    data = load("mnist", args.data_dir)
    print("| model | K | alone s | packed s | speed-up | train GFLOP/s alone → packed "
          "(% of a core) |\n|---|---|---|---|---|---|")
    for model in args.models:
        base = TrainConfig(model=model, epochs=args.epochs, subset=args.subset, threads=1,
                           batch_size=args.batch_size)
        cfgs = [dataclasses.replace(base, seed=s) for s in range(args.seeds)]
        if (problem := pack_problem(cfgs)) is not None:
            print(f"| {model} | — | — | — | — | does not pack: {problem} |")
            continue
        t = time.perf_counter()
        alone = [train(c, data) for c in cfgs]
        t_alone, t = time.perf_counter() - t, time.perf_counter()
        packed = train_pack(cfgs, data)
        t_packed = time.perf_counter() - t
        images = args.subset or 60_000
        work = args.seeds * images * args.epochs * train_flops(base) / 1e9  # GFLOP
        rates = [work / sum(e.seconds for o in alone for e in o.history),
                 work / sum(e.seconds for e in packed[0].history)]  # members share epochs
        shown = " → ".join(f"{r:.1f} ({100 * r / args.core_peak_gflops:.0f}%)" for r in rates)
        print(f"| {model} | {args.seeds} | {t_alone:.1f} | {t_packed:.1f} | "
              f"{t_alone / t_packed:.2f}× | {shown} |")


if __name__ == "__main__":
    main()
