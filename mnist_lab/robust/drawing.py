"""Drawing on stacks of 28 x 28 images for the corruptions: lines, affine warps, fractal maps.

Each is MNIST-C's helper (google-research/mnist-c) vectorised over a batch [n, 28, 28] of floats
in [0, 1]; its quirks are kept so that our corruptions are the benchmark's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.ndimage import affine_transform

SIDE = 28
_AXIS = np.arange(SIDE, dtype=np.float64)


def unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64) / 255.0


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats back to pixels, rounding to nearest as MNIST-C's own viewer does."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def lines(c0, r0, c1, r1) -> np.ndarray:
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


def warp(x: np.ndarray, m: np.ndarray, t: np.ndarray | None = None) -> np.ndarray:
    """skimage.transform.warp(x, inverse_map=AffineTransform) on a stack [n, 28, 28].

    m is the 2x2 inverse map in skimage's (col, row) order, t its translation; without t, the
    one that keeps the centre (13.5, 13.5) fixed, as MNIST-C computes it. Bilinear, black
    outside, interpolating into the border as skimage's warp does ('grid-constant').
    """
    centre = (SIDE - 1) / 2
    t = centre * (1 - m.sum(axis=1)) if t is None else t
    matrix = np.array([[1, 0, 0], [0, m[1, 1], m[1, 0]], [0, m[0, 1], m[0, 0]]])
    return affine_transform(x, matrix, (0, t[1], t[0]), order=1, mode="grid-constant", cval=0.0)


def random_sign_warp(images: np.ndarray, rng: np.random.Generator,
                      matrix: Callable[[float], np.ndarray]) -> np.ndarray:
    """Warp each image by matrix(-1) or matrix(+1), a fair coin's pick, as shear and rotate do."""
    x, sign = unit(images), rng.choice([-1, 1], size=len(images))
    out = np.empty_like(x)
    for s in (-1, 1):
        out[sign == s] = warp(x[sign == s], matrix(s))
    return to_uint8(out)


def plasma_corners(rng: np.random.Generator, n: int, wibbledecay: float,
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
        grid = interleave(parts)
        wibble /= wibbledecay
    low = np.min([p.min(axis=(1, 2)) for p in parts], axis=0)[:, None, None]
    high = np.max([p.max(axis=(1, 2)) for p in parts], axis=0)[:, None, None]
    half = (SIDE + 1) // 2
    corner = interleave([p[:, :half, :half] for p in parts])[:, :SIDE, :SIDE]
    return (corner - low) / (high - low)


def interleave(parts) -> np.ndarray:
    """Corners, centres, left and top midpoints [n, m, m] -> the map [n, 2m, 2m] they make."""
    grid, centres, left, top = parts
    n, m, _ = grid.shape
    out = np.empty((n, 2 * m, 2 * m), grid.dtype)
    out[:, ::2, ::2], out[:, 1::2, 1::2] = grid, centres
    out[:, ::2, 1::2], out[:, 1::2, ::2] = left, top
    return out


def zigzag_points(r0: np.ndarray, r1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
