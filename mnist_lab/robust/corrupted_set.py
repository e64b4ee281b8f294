"""The corrupted test set: every corruption of corruptions.py built once, cached as uint8 with a
checksum, and reused; and the example grid of docs/img/corruptions.png."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from tqdm import tqdm

from .corruptions import CORRUPTIONS, check_images, corrupt

FORMAT = 1  # of the cache written by load_or_build; bump when any corruption changes


def build(images: np.ndarray, seed: int = 0, progress: bool = False) -> dict[str, np.ndarray]:
    """All corruptions of the images, by name, in registry order."""
    images = check_images(images)
    bar = tqdm(CORRUPTIONS, desc="corrupting", unit="set", disable=not progress)
    return {name: corrupt(name, images, seed) for name in bar}


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_atomic(path: Path, write: Callable) -> str:
    """Write through a temporary file beside `path`, then rename; return the bytes' sha256."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        digest = _sha256_file(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


_WHAT = {"format": "format", "seed": "seed", "corruptions": "corruptions",
         "images_sha256": "clean images"}


def _load_cached(path: Path, meta_path: Path, want: dict) -> tuple[dict | None, str]:
    """(the cached sets, '') if the cache is intact and was built from `want`, else (None, why)."""
    try:
        meta = json.loads(meta_path.read_text())
        intact = meta.get("sha256") == _sha256_file(path)
    except (OSError, ValueError, AttributeError):
        intact = False
    if not intact:
        return None, "failed its checksum"
    stale = [_WHAT[key] for key in want if meta.get(key) != want[key]]
    if stale:
        return None, f"is stale (other {', '.join(stale)})"
    with np.load(path, allow_pickle=False) as z:
        return {name: z[name] for name in want["corruptions"]}, ""


def load_or_build(images: np.ndarray, seed: int, path: Path,
                  progress: bool = False) -> dict[str, np.ndarray]:
    """The corrupted sets, built once and cached at `path` (.npz) with a JSON checksum beside it.

    A cache whose checksum fails (tampered, truncated) or that was built from other images, seed,
    corruptions or format is rebuilt, with one line on stderr saying so.
    """
    images = check_images(images)
    path = Path(path)
    meta_path = path.with_name(path.name + ".json")
    want = {"format": FORMAT, "seed": seed, "corruptions": list(CORRUPTIONS),
            "images_sha256": hashlib.sha256(
                str(images.shape).encode() + np.ascontiguousarray(images).tobytes()).hexdigest()}
    if path.exists() or meta_path.exists():
        sets, why = _load_cached(path, meta_path, want)
        if sets is not None:
            return sets
        print(f"corrupted test set at {path} {why}; rebuilding", file=sys.stderr, flush=True)
    sets = build(images, seed, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = _write_atomic(path, lambda f: np.savez(f, **sets))
    _write_atomic(meta_path, lambda f: f.write(json.dumps({**want, "sha256": digest}).encode()))
    return sets


def example_grid(images: np.ndarray, seed: int = 0, n: int = 6) -> Figure:
    """The first n images clean and under each corruption: one labelled row each."""
    images = check_images(images)[:n]
    rows = {"clean": images} | {name: corrupt(name, images, seed) for name in CORRUPTIONS}
    fig = Figure(figsize=(1.2 + 0.8 * len(images), 0.8 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(images), squeeze=False)
    for ax_row, (name, imgs) in zip(axes, rows.items(), strict=True):
        for ax, img in zip(ax_row, imgs, strict=True):
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    return fig
