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
from scipy.ndimage import affine_transform, gaussian_filter
from skimage.feature import canny

from ..errors import UserError

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]
CORRUPTIONS: dict[str, Corruption] = {}
SIDE = 28
_AXIS = np.arange(SIDE, dtype=np.float64)


def register_corruption(fn: Corruption) -> Corruption:
    """Decorator: a corruption named after its function, in definition order."""
    CORRUPTIONS[fn.__name__] = fn
    return fn


def _unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64) / 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats back to pixels, rounding to nearest as MNIST-C's own viewer does."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _lines(c0, r0, c1, r1) -> np.ndarray:
    """MNIST-C's line_from_points for n lines at once ([n] endpoints -> [n, 28, 28] in [0, 1]).

    Brightness decays as log(1 - d/2.3) + 1 with the *vertical* distance d to the line, and the
    line is cut to the columns floor(c0) <= c < ceil(c1); a vertical segment draws nothing.
    """
    c0, r0, c1, r1 = (np.asarray(v, np.float64)[:, None, None] for v in (c0, r0, c1, r1))
    with np.errstate(divide="ignore", invalid="ignore"):
        row = (r1 - r0) / (c1 - c0) * (_AXIS[None, None, :] - c0) + r0
    dist = np.clip(np.abs(_AXIS[None, :, None] - row), 0, 2.3 - 1e-10)
    value = np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)
    cols = _AXIS[None, None, :]
    inside = (cols >= np.floor(c0)) & (cols < np.ceil(c1)) & (c1 != c0)
    return np.where(inside, value, 0.0)


def _warp(x: np.ndarray, m: np.ndarray, t: np.ndarray | None = None) -> np.ndarray:
    """skimage.transform.warp(x, inverse_map=AffineTransform) on a stack [n, 28, 28].

    m is the 2x2 inverse map in skimage's (col, row) order, t its translation; without t, the
    one that keeps the centre (13.5, 13.5) fixed, as MNIST-C computes it. Bilinear, black
    outside, interpolating into the border as skimage's warp does ('grid-constant').
    """
    centre = (SIDE - 1) / 2
    t = centre * (1 - m.sum(axis=1)) if t is None else t
    matrix = np.array([[1, 0, 0], [0, m[1, 1], m[1, 0]], [0, m[0, 1], m[0, 0]]])
    return affine_transform(x, matrix, (0, t[1], t[0]), order=1, mode="grid-constant", cval=0.0)


def _random_sign_warp(images: np.ndarray, rng: np.random.Generator,
                      matrix: Callable[[float], np.ndarray]) -> np.ndarray:
    """Warp each image by matrix(-1) or matrix(+1), a fair coin's pick, as shear and rotate do."""
    x, sign = _unit(images), rng.choice([-1, 1], size=len(images))
    out = np.empty_like(x)
    for s in (-1, 1):
        out[sign == s] = _warp(x[sign == s], matrix(s))
    return _to_uint8(out)


def _plasma_corners(rng: np.random.Generator, n: int, wibbledecay: float,
                    mapsize: int = 256) -> np.ndarray:
    """The top-left 28 x 28 of n diamond-square height maps, as MNIST-C's plasma_fractal.

    Its quirks are kept: the noise is wibble * U(-wibble, wibble), and each map is normalised by
    its own min and max over the whole map, not over the corner that is used. Each level keeps
    its points contiguous (corners, centres, left and top edge midpoints) instead of writing
    strided into one map, and runs in float32: a 6x speed-up, the same maps to float32 precision.
    """
    grid, wibble = np.zeros((n, 1, 1), np.float32), 100.0

    def wibbled_mean(total: np.ndarray) -> np.ndarray:
        total *= 0.25
        noise = rng.random(total.shape, dtype=np.float32)
        noise *= 2 * wibble * wibble
        noise -= wibble * wibble  # wibble * U(-wibble, wibble), in place
        return np.add(total, noise, out=total)

    while True:
        centres = grid + np.roll(grid, -1, axis=1)
        centres = wibbled_mean(centres + np.roll(centres, -1, axis=2))
        left = wibbled_mean(centres + np.roll(centres, 1, axis=1) + grid
                            + np.roll(grid, -1, axis=2))
        top = wibbled_mean(centres + np.roll(centres, 1, axis=2) + grid
                           + np.roll(grid, -1, axis=1))
        parts = (grid, centres, left, top)
        if 2 * grid.shape[1] == mapsize:
            break  # the last level: only its corner is assembled
        grid = _interleave(parts)
        wibble /= wibbledecay
    low = np.min([p.min(axis=(1, 2)) for p in parts], axis=0)[:, None, None]
    high = np.max([p.max(axis=(1, 2)) for p in parts], axis=0)[:, None, None]
    half = (SIDE + 1) // 2
    corner = _interleave([p[:, :half, :half] for p in parts])[:, :SIDE, :SIDE]
    return (corner - low) / (high - low)


def _interleave(parts) -> np.ndarray:
    """Corners, centres, left and top midpoints [n, m, m] -> the map [n, 2m, 2m] they make."""
    grid, centres, left, top = parts
    n, m, _ = grid.shape
    out = np.empty((n, 2 * m, 2 * m), grid.dtype)
    out[:, ::2, ::2], out[:, 1::2, 1::2] = grid, centres
    out[:, ::2, 1::2], out[:, 1::2, ::2] = left, top
    return out


@register_corruption
def shot_noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise: Poisson(3 x) / 3 on [0, 1] intensities (severity 5)."""
    c = 3
    return _to_uint8(np.clip(rng.poisson(_unit(images) * c) / c, 0, 1))


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
    x = (gaussian_filter(_unit(images), (0, sigma, 0), mode="nearest") * 255).astype(np.uint8)
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
    return _to_uint8(np.clip(gaussian_filter(x / 255.0, (0, sigma, 0), mode="nearest"), 0, 1))


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
    x, out = _unit(images), np.zeros(images.shape)
    who, grid = np.arange(len(images))[:, None, None], np.arange(SIDE)
    for k in range(len(taps)):
        rows = np.clip(grid[None, :, None] + dy[:, k, None, None], 0, SIDE - 1)
        cols = np.clip(grid[None, None, :] + dx[:, k, None, None], 0, SIDE - 1)
        out += weight[k] * x[who, rows, cols]
    return _to_uint8(out)


@register_corruption
def shear(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shear by 0.4 rad, direction by coin flip, about the centre (severity 2).

    The matrix is skimage's AffineTransform(shear=s) of 2019, [[1, -sin s], [0, cos s]]; newer
    skimage versions define shear differently, so we build it ourselves.
    """
    return _random_sign_warp(images, rng, lambda s: np.array(
        [[1.0, -np.sin(0.4 * s)], [0.0, np.cos(0.4 * s)]]))


@register_corruption
def scale(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shrink to 70% about the centre: inverse map scale 1/0.7 (severity 3). Deterministic."""
    return _to_uint8(_warp(_unit(images), np.eye(2) / 0.7))


@register_corruption
def rotate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate by 0.4 rad (23 degrees), direction by coin flip, about the centre (severity 2)."""
    def matrix(s: int) -> np.ndarray:
        a = 0.4 * s
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])

    return _random_sign_warp(images, rng, matrix)


@register_corruption
def brightness(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add 0.5 to the HSV value (severity 5). Deterministic.

    For grey pixels gray2rgb -> rgb2hsv -> V + 0.5 -> hsv2rgb -> rgb2gray is clip(x + 0.5).
    """
    return _to_uint8(np.clip(_unit(images) + 0.5, 0, 1))


@register_corruption
def translate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift by 3 pixels along each axis, each direction by coin flip (severity 3)."""
    x, signs = _unit(images), rng.choice([-1, 1], size=(len(images), 2))
    out = np.empty_like(x)
    for sx in (-1, 1):
        for sy in (-1, 1):
            pick = (signs[:, 0] == sx) & (signs[:, 1] == sy)
            out[pick] = _warp(x[pick], np.eye(2), np.array([3.0 * sx, 3.0 * sy]))
    return _to_uint8(out)


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
    x = _unit(images)
    out = np.empty_like(x)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        plasma = _plasma_corners(rng, len(part), decay)
        top = part.max(axis=(1, 2), keepdims=True)
        out[start:start + chunk] = (part + strength * plasma) * top / (top + strength)
    return _to_uint8(np.clip(out, 0, 1))


@register_corruption
def spatter(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mud: thresholded, blurred Gaussian noise painted as grey 63 over the digit (severity 4)."""
    loc, spread, blur, threshold, mud_blur = 0.65, 0.3, 1.0, 0.65, 1.5
    x = _unit(images)
    liquid = gaussian_filter(rng.normal(loc, spread, x.shape), (0, blur, blur), mode="nearest")
    mask = gaussian_filter((liquid > threshold).astype(np.float64), (0, mud_blur, mud_blur),
                           mode="nearest")
    mask[mask < 0.8] = 0
    return _to_uint8(np.clip(x * (1 - mask) + 63 / 255 * mask, 0, 1))


@register_corruption
def dotted_line(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dashed line (2 pixels on, 2 off) across the image between random rows in [0, 26].

    As in the original, the last column stays clear: the line ends at ceil(27) exclusive.
    """
    n = len(images)
    r0, r1 = rng.integers(0, 27, size=(2, n))
    line = _lines(np.zeros(n), r0, np.full(n, SIDE - 1.0), r1)
    line[:, :, (np.arange(SIDE) // 2) % 2 == 0] = 0  # columns 0-1, 4-5, ... are gaps
    return _to_uint8(np.clip(_unit(images) + line, 0, 1))


def _zigzag_points(r0: np.ndarray, r1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The zigzag's vertices [n, k] (columns, rows) from column 2, row r0 to column 25, row r1."""
    a = b = 2.0  # length and width of a zig
    c0, c1 = 2, 25
    theta = np.arctan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / np.cos(theta)  # length of the straight line
    zigs = ((d - a) // (2 * a)).astype(int) + 1
    # |r1 - r0| <= 5 keeps d within [23, 23.6], so every zigzag has 6 zigs and a last vertex
    assert (zigs == zigs[0]).all() and (d != 2 * a * (d // (2 * a))).all()
    i = np.arange(zigs[0])
    cs = np.concatenate([[0.0], (2 * i + 1) * a])[None, :].repeat(len(d), 0)
    rs = np.concatenate([[0.0], (-1.0) ** i * b])[None, :].repeat(len(d), 0)
    # The original's last vertex: (d, r / (2 (d - max_c))), r the last zig's row; kept as is
    last_r = rs[:, -1] / (2 * (d - 2 * a * (d // (2 * a))))
    cs, rs = np.column_stack([cs, d]), np.column_stack([rs, last_r])
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    return cos * cs - sin * rs + c0, sin * cs + cos * rs + r0[:, None]


@register_corruption
def zigzag(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A zigzag line from column 2 to 25, starting at a random row, sloping by up to 5 rows."""
    n = len(images)
    r0 = rng.integers(0, 27, size=n)
    r1 = r0 + rng.integers(-5, 5, size=n)
    cs, rs = _zigzag_points(r0.astype(np.float64), r1.astype(np.float64))
    x = _unit(images)
    for k in range(1, cs.shape[1]):
        x = np.clip(x + _lines(cs[:, k - 1], rs[:, k - 1], cs[:, k], rs[:, k]), 0, 1)
    return _to_uint8(x)


@register_corruption
def canny_edges(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """skimage's Canny edge map (sigma 1, thresholds 0.1 / 0.2) in white. Deterministic.

    Current skimage, not the 2019 one: its edge thinning may differ by a pixel here and there.
    """
    x = _unit(images)
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
