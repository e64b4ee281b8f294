"""Turn a real picture of a digit into what MNIST looks like: the one implementation `predict`
(and anything else that classifies user images) uses.

MNIST was made by size-normalising each digit to fit a 20x20 box (keeping its aspect ratio)
and centring its centre of mass in a 28x28 field, white ink on black. Photos and scans are the
opposite (dark ink on light paper, uneven light), so we: grayscale, invert if the border is
light, stretch contrast against the background level, crop to the ink, fit into 20x20, and
centre by mass.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import UserError

MAX_PIXELS = 40_000_000  # refuse decompression bombs before decoding them
INK = 0.2  # after contrast stretch, pixels above this count as ink when cropping
MIN_CONTRAST = 0.1  # the brightest ink must stand this far (of 0..1) above the background
# catch_warnings swaps the process-wide filter list and is not thread-safe (before Python
# 3.14): `serve` opens images in several threads, so they take turns at it
_OPEN_LOCK = threading.Lock()


def load_image(source: str | Path | object) -> np.ndarray:
    """Decode an image file (path or file object) to a float grayscale array in [0, 1]."""
    name = str(getattr(source, "name", source))
    try:
        with _open(source) as img:
            if img.width * img.height > MAX_PIXELS:
                raise UserError(f"{name}: image of {img.width}x{img.height} pixels is too large "
                                f"(limit {MAX_PIXELS:,} pixels)")
            gray = _on_white(img).convert("L")
            gray.load()
    except FileNotFoundError:
        raise UserError(f"{name}: no such file") from None
    except Image.DecompressionBombError:  # over twice Pillow's own limit: refused in open
        raise UserError(f"{name}: image is too large (limit {MAX_PIXELS:,} pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        # SyntaxError: Pillow's "broken PNG chunk"
        raise UserError(f"{name}: not a readable image ({type(e).__name__})") from None
    return np.asarray(gray, dtype=np.float32) / 255.0


def _open(source: str | Path | object) -> Image.Image:
    """Image.open without its DecompressionBombWarning: MAX_PIXELS, lower, gives our error."""
    with _OPEN_LOCK, warnings.catch_warnings():  # open reads only the header: a short wait
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(source)


def _on_white(img: Image.Image) -> Image.Image:
    """Flatten transparency onto white paper: ink drawn on a transparent canvas stays visible."""
    if img.mode not in ("RGBA", "LA", "PA") and "transparency" not in img.info:
        return img
    rgba = img.convert("RGBA")
    paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(paper, rgba)


def to_mnist(gray: np.ndarray, *, name: str = "the image") -> np.ndarray:
    """Grayscale [H, W] in [0, 1], any polarity -> uint8 [28, 28] white digit on black."""
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise UserError(f"{name} is not a 2-D grayscale image (shape {gray.shape})")
    ink = stretch_contrast(gray, name=name)
    rows, cols = np.nonzero(ink > INK)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = ink.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(
        size, Image.Resampling.LANCZOS), dtype=np.float32)
    return _centre_by_mass(small)


def stretch_contrast(gray: np.ndarray, *, name: str = "the image") -> np.ndarray:
    """Grayscale in [0, 1], any polarity -> ink from 0 (background) to 1; UserError if blank."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:  # dark ink on light paper: make it light on dark like MNIST
        gray, border = 1.0 - gray, 1.0 - border
    background = float(np.median(border))
    peak = float(gray.max())
    if peak - background < MIN_CONTRAST:
        raise UserError(f"no digit found: {name} has no contrast")
    return np.clip((gray - background) / (peak - background), 0, 1)


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Place `digit` (at most 20x20) in a 28x28 field with its centre of mass at the centre."""
    h, w = digit.shape
    total = digit.sum()
    ys, xs = np.mgrid[0:h, 0:w]
    cy, cx = ((ys * digit).sum() / total, (xs * digit).sum() / total) if total else (h / 2, w / 2)
    top = int(np.clip(round(14 - cy), 0, 28 - h))
    left = int(np.clip(round(14 - cx), 0, 28 - w))
    field = np.zeros((28, 28), dtype=np.float32)
    field[top:top + h, left:left + w] = digit
    return np.clip(field, 0, 255).astype(np.uint8)
