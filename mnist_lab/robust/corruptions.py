"""MNIST-C (Mu & Gilmer 2019): the 15 corruptions of the test set, re-implemented in numpy/scipy.

`CORRUPTIONS[name](images, rng)` maps uint8 [N, 28, 28] to uint8 [N, 28, 28]; each function is
the original's (google-research/mnist-c, corruptions.py) at the severity the benchmark used, its
default argument. Where the original draws from numpy's global random state per image, ours
draws the whole batch from a Generator at once, so image i's corruption depends on N: a slice of
the corrupted set is not the corruption of the slice. The original returns floats; we round.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.feature import canny

from ..errors import UserError
from .drawing import (
    SIDE,
    lines,
    plasma_corners,
    random_sign_warp,
    to_uint8,
    unit,
    warp,
    zigzag_points,
)

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]
CORRUPTIONS: dict[str, Corruption] = {}


def register_corruption(fn: Corruption) -> Corruption:
    """Decorator: a corruption named after its function, in definition order."""
    CORRUPTIONS[fn.__name__] = fn
    return fn


@register_corruption
def shot_noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise: Poisson(3 x) / 3 on [0, 1] intensities (severity 5)."""
    c = 3
    return to_uint8(np.clip(rng.poisson(unit(images) * c) / c, 0, 1))


@register_corruption
def impulse_noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: 17% of pixels set to white or black, half each (severity 4).

    skimage's random_noise(mode='s&p') of 2019, written out: its current version draws the
    salted pixels differently (an exact count), so we keep the old per-pixel coins.
    """
    flipped = rng.random(images.shape) < 0.17
    salted = rng.random(images.shape) < 0.5
    return np.where(flipped, np.where(salted, 255, 0), images).astype(np.uint8)


@register_corruption
def glass_blur(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, swap each pixel with a neighbour by coin flip (2 passes), blur (severity 1).

    Faithful to two quirks: skimage's gaussian(..., multichannel=True) on a 2-D image took the
    columns for colour channels, so both blurs (sigma 0.7) run down the columns only; and
    randint(-1, 1) never returns 1, so a pixel only ever swaps up and/or left.
    """
    sigma, delta, passes = 0.7, 1, 2
    n = len(images)
    x = (gaussian_filter(unit(images), (0, sigma, 0), mode="nearest") * 255).astype(np.uint8)
    flat = x.reshape(n, SIDE * SIDE)
    positions = range(SIDE - delta, delta, -1)  # bottom-right to top-left, as the original
    for _ in range(passes):
        swap = rng.random((len(positions), len(positions), n)) < 0.5
        dy, dx = rng.integers(-delta, delta, size=(2, len(positions), len(positions), n))
        for i, h in enumerate(positions):
            for j, w in enumerate(positions):
                who = np.flatnonzero(swap[i, j])
                here = h * SIDE + w
                there = here + dy[i, j, who] * SIDE + dx[i, j, who]
                kept = flat[who, here]
                flat[who, here] = flat[who, there]
                flat[who, there] = kept
    return to_uint8(np.clip(gaussian_filter(x / 255.0, (0, sigma, 0), mode="nearest"), 0, 1))


@register_corruption
def motion_blur(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ImageMagick's motion blur, radius 10 and sigma 3, at an angle in U(-45, 45) (severity 1).

    A one-sided line kernel: 21 taps along the angle, weighted exp(-i^2 / 2 sigma^2), offsets
    rounded as ImageMagick rounds them and the border extended (its default 'edge' pixels).
    """
    radius, sigma = 10, 3.0
    taps = np.arange(2 * radius + 1)  # GetOptimalKernelWidth1D when a radius is given
    weight = np.exp(-(taps**2) / (2 * sigma**2))
    weight /= weight.sum()
    angle = np.deg2rad(rng.uniform(-45, 45, size=len(images)))[:, None]
    dx = np.ceil(taps * np.cos(angle) - 0.5).astype(np.intp)  # [n, taps]
    dy = np.ceil(taps * np.sin(angle) - 0.5).astype(np.intp)
    x, out = unit(images), np.zeros(images.shape)
    who, grid = np.arange(len(images))[:, None, None], np.arange(SIDE)
    for k in range(len(taps)):
        rows = np.clip(grid[None, :, None] + dy[:, k, None, None], 0, SIDE - 1)
        cols = np.clip(grid[None, None, :] + dx[:, k, None, None], 0, SIDE - 1)
        out += weight[k] * x[who, rows, cols]
    return to_uint8(out)


@register_corruption
def shear(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shear by 0.4 rad, direction by coin flip, about the centre (severity 2).

    The matrix is skimage's AffineTransform(shear=s) of 2019, [[1, -sin s], [0, cos s]]; newer
    skimage versions define shear differently, so we build it ourselves.
    """
    return random_sign_warp(images, rng, lambda s: np.array(
        [[1.0, -np.sin(0.4 * s)], [0.0, np.cos(0.4 * s)]]))


@register_corruption
def scale(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shrink to 70% about the centre: inverse map scale 1/0.7 (severity 3). Deterministic."""
    return to_uint8(warp(unit(images), np.eye(2) / 0.7))


@register_corruption
def rotate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate by 0.4 rad (23 degrees), direction by coin flip, about the centre (severity 2)."""
    def matrix(s: int) -> np.ndarray:
        a = 0.4 * s
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])

    return random_sign_warp(images, rng, matrix)


@register_corruption
def brightness(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add 0.5 to the HSV value (severity 5). Deterministic.

    For grey pixels gray2rgb -> rgb2hsv -> V + 0.5 -> hsv2rgb -> rgb2gray is clip(x + 0.5).
    """
    return to_uint8(np.clip(unit(images) + 0.5, 0, 1))


@register_corruption
def translate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift by 3 pixels along each axis, each direction by coin flip (severity 3)."""
    x, signs = unit(images), rng.choice([-1, 1], size=(len(images), 2))
    out = np.empty_like(x)
    for sx in (-1, 1):
        for sy in (-1, 1):
            pick = (signs[:, 0] == sx) & (signs[:, 1] == sy)
            out[pick] = warp(x[pick], np.eye(2), np.array([3.0 * sx, 3.0 * sy]))
    return to_uint8(out)


@register_corruption
def stripe(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Invert the 7 leftmost and 7 rightmost columns. Deterministic."""
    out = images.copy()
    out[:, :, :7] = 255 - out[:, :, :7]
    out[:, :, 21:] = 255 - out[:, :, 21:]
    return out


@register_corruption
def fog(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add 3 x a plasma fractal (wibble decay 1.4), then rescale by max / (max + 3) (severity 5).

    Each image gets its own 256 x 256 fractal, of which the top-left 28 x 28 is used.
    """
    strength, decay, chunk = 3.0, 1.4, 8  # 8 maps' last level fits in the L2 cache
    x = unit(images)
    out = np.empty_like(x)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        plasma = plasma_corners(rng, len(part), decay)
        top = part.max(axis=(1, 2), keepdims=True)
        out[start:start + chunk] = (part + strength * plasma) * top / (top + strength)
    return to_uint8(np.clip(out, 0, 1))


@register_corruption
def spatter(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mud: thresholded, blurred Gaussian noise painted as grey 63 over the digit (severity 4)."""
    loc, spread, blur, threshold, mud_blur = 0.65, 0.3, 1.0, 0.65, 1.5
    x = unit(images)
    liquid = gaussian_filter(rng.normal(loc, spread, x.shape), (0, blur, blur), mode="nearest")
    mask = gaussian_filter((liquid > threshold).astype(np.float64), (0, mud_blur, mud_blur),
                           mode="nearest")
    mask[mask < 0.8] = 0
    return to_uint8(np.clip(x * (1 - mask) + 63 / 255 * mask, 0, 1))


@register_corruption
def dotted_line(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dashed line (2 pixels on, 2 off) across the image between random rows in [0, 26].

    As in the original, the last column stays clear: the line ends at ceil(27) exclusive.
    """
    n = len(images)
    r0, r1 = rng.integers(0, 27, size=(2, n))
    line = lines(np.zeros(n), r0, np.full(n, SIDE - 1.0), r1)
    line[:, :, (np.arange(SIDE) // 2) % 2 == 0] = 0  # columns 0-1, 4-5, ... are gaps
    return to_uint8(np.clip(unit(images) + line, 0, 1))


@register_corruption
def zigzag(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A zigzag line from column 2 to 25, starting at a random row, sloping by up to 5 rows."""
    n = len(images)
    r0 = rng.integers(0, 27, size=n)
    r1 = r0 + rng.integers(-5, 5, size=n)
    cs, rs = zigzag_points(r0.astype(np.float64), r1.astype(np.float64))
    x = unit(images)
    for k in range(1, cs.shape[1]):
        x = np.clip(x + lines(cs[:, k - 1], rs[:, k - 1], cs[:, k], rs[:, k]), 0, 1)
    return to_uint8(x)


@register_corruption
def canny_edges(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """skimage's Canny edge map (sigma 1, thresholds 0.1 / 0.2) in white. Deterministic.

    Current skimage, not the 2019 one: its edge thinning may differ by a pixel here and there.
    """
    x = unit(images)
    return np.stack([canny(img) for img in x]).astype(np.uint8) * 255


def check_images(images) -> np.ndarray:
    """The images as a uint8 array [N, 28, 28], or a UserError saying what they are."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise UserError(f"corruptions need uint8 images [N, {SIDE}, {SIDE}], "
                        f"got {images.dtype} {list(images.shape)}")
    return images


def corrupt(name: str, images: np.ndarray, seed: int) -> np.ndarray:
    """One corruption of uint8 images [N, 28, 28]; the same (name, seed, images) give the same."""
    if name not in CORRUPTIONS:
        raise UserError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    images = check_images(images)
    if len(images) == 0:
        return images.copy()
    # One stream per corruption, so changing the draws of one changes no other; the index is in
    # the seed, so a new corruption goes at the end of the registry or the cache FORMAT changes
    rng = np.random.default_rng([seed, list(CORRUPTIONS).index(name)])
    return CORRUPTIONS[name](images, rng)
