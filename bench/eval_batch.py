"""Inference throughput by evaluation batch size: which batch `evaluate.evaluate` should use.

    python bench/eval_batch.py                       # default models, 1 and 2 threads
    python bench/eval_batch.py --models overparam_cnn --threads 1

On CPU a conv net's activations for a large batch spill out of the caches: in the 3.6M-parameter
CNN one 128-channel 28x28 feature map is 400 KB per image, 0.8 GB for a batch of 2,000.
Synthetic images in channels-last layout, as `evaluate` feeds them.
"""

from __future__ import annotations

import argparse
import time

import torch

from mnist_lab.models import create_model


def images_per_s(model: torch.nn.Module, x: torch.Tensor, batch: int, seconds: float) -> float:
    """Inference images/s over x in chunks of `batch`, repeated for at least `seconds`."""
    with torch.inference_mode():
        model(x[:batch])  # warm-up: oneDNN picks and caches its kernels
        n, start = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - start < seconds:
            for i in range(0, len(x), batch):
                model(x[i:i + batch])
            n += len(x)
    return n / (time.perf_counter() - start)


def main() -> None:
    """Print a Markdown table: model, threads, then images/s per batch size."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+",
                   default=["mlp", "compact_step3", "simple_cnn", "cnn_aug", "overparam_cnn"])
    p.add_argument("--batches", nargs="+", type=int, default=[32, 64, 128, 256, 512, 2000])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()
    print("| model | threads | " + " | ".join(f"batch {b}" for b in args.batches) + " |")
    print("|---|---|" + "---|" * len(args.batches))
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name).eval().to(memory_format=torch.channels_last)
        x = torch.randn(2000, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        for threads in args.threads:
            torch.set_num_threads(threads)
            rates = [images_per_s(model, x, b, args.seconds) for b in args.batches]
            print(f"| {name} | {threads} | " + " | ".join(f"{r:,.0f}" for r in rates) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
