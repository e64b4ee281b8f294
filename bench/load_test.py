"""Bounded load test of `POST /predict` on loopback: throughput, latency percentiles, errors.

Starts `mnist-lab serve` as its own process (a real uvicorn server), then sends `--requests`
uploads from this process with `--concurrency` in flight at once. Each upload is a real MNIST
test digit drawn as a phone-photo-like scan (dark ink on white paper, off-centre, 240x180), so
every request goes through the full decode + MNIST-style preprocessing + model path. Prints
one JSON object; any non-200 response counts as an error.

    python bench/load_test.py --requests 2000 --concurrency 16          # the recorded figure
    python bench/load_test.py --requests 100 --concurrency 8 --quick    # seconds; CI's smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from mnist_lab.data import load


def scans(data_dir: str | None, n: int = 50) -> list[tuple[bytes, int]]:
    """PNG scans of the first `n` MNIST test digits, with their labels."""
    test = load("mnist", data_dir).test
    out = []
    for i in range(n):
        ink = Image.fromarray(255 - test.images[i].numpy()).resize((120, 120))
        page = Image.new("L", (240, 180), 255)
        page.paste(ink, (90, 30))
        buf = io.BytesIO()
        page.save(buf, format="PNG")
        out.append((buf.getvalue(), int(test.labels[i])))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_checkpoint(runs: Path, data_dir: str | None, quick: bool) -> None:
    """A real model to serve: the compact CNN, 1 epoch (~99%), or 2,000 images when quick."""
    cmd = [sys.executable, "-m", "mnist_lab.cli", "train", "--epochs", "1", "--batch-size", "64",
           "--rotate", "0", "--translate", "0", "--no-progress", "--runs-dir", str(runs)]
    cmd += ["--subset", "2000", "--test-subset", "500"] if quick else []
    cmd += ["--data-dir", data_dir] if data_dir else []
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


async def wait_ready(client: httpx.AsyncClient, server: subprocess.Popen) -> None:
    for _ in range(300):
        if server.poll() is not None:
            sys.exit(f"server exited with {server.returncode}")
        try:
            if (await client.get("/models")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    sys.exit("server did not come up in 30 s")


async def fire(client: httpx.AsyncClient, uploads: list[tuple[bytes, int]], n: int,
               concurrency: int) -> tuple[list[float], list[str], int]:
    """Send n requests, `concurrency` at a time: (latencies s, errors, correct predictions)."""
    sem, latencies, errors, correct = asyncio.Semaphore(concurrency), [], [], 0

    async def one(i: int) -> None:
        nonlocal correct
        png, label = uploads[i % len(uploads)]
        async with sem:
            t0 = time.perf_counter()
            try:
                r = await client.post("/predict", files={"file": ("d.png", png, "image/png")})
            except httpx.HTTPError as e:
                errors.append(type(e).__name__)
                return
            latencies.append(time.perf_counter() - t0)
        if r.status_code != 200:
            errors.append(f"HTTP {r.status_code}")
        elif r.json()["digit"] == label:
            correct += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    return latencies, errors, correct


async def run(args: argparse.Namespace, runs: Path) -> dict:
    uploads = scans(args.data_dir)
    port = free_port()
    cmd = [sys.executable, "-m", "mnist_lab.cli", "serve", "--port", str(port),
           "--runs-dir", str(runs)] + (["--checkpoint", args.checkpoint] if args.checkpoint else [])
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    limits = httpx.Limits(max_connections=args.concurrency)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits,
                                     timeout=60) as client:
            await wait_ready(client, server)
            await fire(client, uploads, 2 * args.concurrency, args.concurrency)  # warm-up
            t0 = time.perf_counter()
            lat, errors, correct = await fire(client, uploads, args.requests, args.concurrency)
            wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(timeout=30)
    ms = sorted(1000 * x for x in lat)
    return {"requests": args.requests, "concurrency": args.concurrency, "errors": len(errors),
            "error_kinds": sorted(set(errors)), "seconds": round(wall, 2),
            "requests_per_s": round(args.requests / wall, 1),
            "p50_ms": round(statistics.median(ms), 1) if ms else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if ms else None,
            "max_ms": round(ms[-1], 1) if ms else None,
            "accuracy_on_scans": round(correct / args.requests, 4),
            "cpus": os.cpu_count()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="requests to send (after warm-up)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    p.add_argument("--checkpoint", help="run id or checkpoint to serve (default: train one)")
    p.add_argument("--runs-dir", help="results store to serve from (default: a temporary one)")
    p.add_argument("--data-dir", help="MNIST folder (default: mnist-lab's usual search)")
    p.add_argument("--quick", action="store_true", help="train the served model on 2k images")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs_dir) if args.runs_dir else Path(tmp) / "runs"
        if not args.checkpoint and not args.runs_dir:
            train_checkpoint(runs, args.data_dir, args.quick)
        print(json.dumps(asyncio.run(run(args, runs))))


if __name__ == "__main__":
    main()
