"""Throughput of one training step and of inference under each speed lever, one at a time.

    python bench/levers.py                      # all levers, compact_step3 and the big CNNs
    python bench/levers.py --models compact_step3 --seconds 2

Every lever runs with the training path's allocator setting (mnist_lab/allocator.py: freed
memory kept for reuse). That setting itself is not a row here: it is the whole process's, and
glibc's own threshold moves with what the process freed before, so it was measured end to end
against the commit before it (docs/PERFORMANCE.md, round four).

Synthetic batches (throughput does not depend on pixel values); each measurement runs for
--seconds after a warm-up. FLOP counts are from torch.utils.flop_counter, so the last column
is the achieved fraction of the CPU's peak given by --peak-gflops.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from mnist_lab.allocator import keep_freed_memory
from mnist_lab.models import create_model


def step_flops(model: torch.nn.Module, batch: int) -> float:
    """FLOPs of one forward + backward pass over `batch` images."""
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()


def throughput(model: torch.nn.Module, batch: int, channels_last: bool, bf16: bool,
               seconds: float, compile_: bool = False) -> tuple[float, float]:
    """(training images/s, inference images/s)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if compile_:
        model = torch.compile(model)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def timed(fn, n_images: int) -> float:
        for _ in range(2):
            fn()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn()
            n += n_images
        return n / (time.perf_counter() - start)

    model.train()
    train = timed(step, batch)
    model.eval()
    xe = torch.randn(2000, 1, 28, 28).contiguous(memory_format=fmt)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        infer = timed(lambda: model(xe), 2000)
    return train, infer


def main() -> None:
    """Print a Markdown table: model, lever, train img/s, inference img/s, % of peak."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["compact_step3", "cnn_aug", "pytorch_example"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow)")
    p.add_argument("--peak-gflops", type=float, default=0.0,
                   help="the cores' fp32 peak, e.g. 2 cores x 32 FLOP/cycle x GHz")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    args = p.parse_args()
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    levers = [("baseline (NCHW, fp32)", {}, False, False, False),
              ("channels-last", {}, True, False, False),
              ("channels-last + bf16 autocast", {}, True, True, False)]
    if args.compile:
        levers.append(("channels-last + torch.compile", {}, True, False, True))
    print(f"threads: {torch.get_num_threads()}, batch {args.batch}\n")
    print("| model | lever | train img/s | inference img/s | train GFLOP/s | % of peak |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        rows = list(levers)
        if name == "compact_step3":
            rows.insert(0, ("with dropout 0.05 (NCHW)", {"dropout": 0.05}, False, False, False))
        for label, kw, cl, bf16, compile_ in rows:
            torch.manual_seed(0)
            model = create_model(name, **kw)
            flops = step_flops(model, args.batch) / args.batch
            start = time.perf_counter()
            train, infer = throughput(model, args.batch, cl, bf16, args.seconds, compile_)
            if compile_:
                label += f" (compile + timing: {time.perf_counter() - start:.0f} s)"
            gflops = train * flops / 1e9
            peak = f"{100 * gflops / args.peak_gflops:.0f}%" if args.peak_gflops else "—"
            print(f"| {name} | {label} | {train:.0f} | {infer:.0f} | {gflops:.1f} | {peak} |")


if __name__ == "__main__":
    main()
