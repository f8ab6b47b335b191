"""Tile-independent procedural noise.

Every random value is a hash of (seed, tag, global integer coordinates), so any window of a
slide can be generated on its own and agrees exactly with its neighbours: this is what lets a
slide of any size be rendered chunk by chunk.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0xFF51AFD7ED558CCD)
_M4 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_S11 = np.uint64(11)


def hash_u01(seed: int, tag: int, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) values, one per (iy, ix) integer pair (broadcast), fixed by seed and tag."""
    key = np.uint64((seed * 0x165667B1 + tag * 0x27D4EB2F + 0x5BD1E995) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        h = (np.asarray(iy).astype(np.int64).astype(np.uint64) * _M1) ^ (
            np.asarray(ix).astype(np.int64).astype(np.uint64) * _M2
        )
        h = h ^ key
        h ^= h >> _S33
        h *= _M3
        h ^= h >> _S33
        h *= _M4
        h ^= h >> _S33
    return ((h >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)).astype(np.float32)


def white_noise(seed: int, tag: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """Approximately standard normal noise on the pixel grid [y0, y0+h) x [x0, x0+w)."""
    iy = np.arange(y0, y0 + h)[:, None]
    ix = np.arange(x0, x0 + w)[None, :]
    # sum of two uniforms per pixel is cheap and smooth enough for texture
    u = hash_u01(seed, tag, iy, ix) + hash_u01(seed, tag + 7919, iy, ix)
    return (u - 1.0) * np.float32(2.449)


def value_noise(seed: int, tag: int, ys: np.ndarray, xs: np.ndarray, cell: float) -> np.ndarray:
    """Smooth noise in [-1, 1] on the grid ys x xs (any units), with features about ``cell`` wide.

    Values live on a global lattice of spacing ``cell`` and are blended with a smoothstep, so the
    noise is the same wherever the grid starts.
    """
    ty = np.asarray(ys, dtype=np.float64) / cell
    tx = np.asarray(xs, dtype=np.float64) / cell
    iy0 = np.floor(ty).astype(np.int64)
    ix0 = np.floor(tx).astype(np.int64)
    fy = (ty - iy0).astype(np.float32)
    fx = (tx - ix0).astype(np.float32)
    fy = fy * fy * (3 - 2 * fy)
    fx = fx * fx * (3 - 2 * fx)
    # hash the lattice once (far fewer points than pixels) and interpolate along x for every
    # lattice row, then along y: the same arithmetic as per-pixel corners, value for value
    ly = np.arange(iy0.min(), iy0.max() + 2) if iy0.size else np.zeros(1, np.int64)
    lx = np.arange(ix0.min(), ix0.max() + 2) if ix0.size else np.zeros(1, np.int64)
    lattice = hash_u01(seed, tag, ly[:, None], lx[None, :])
    cx = ix0 - lx[0]
    left = lattice[:, cx]
    rows = left + (lattice[:, cx + 1] - left) * fx[None, :]
    ry = iy0 - ly[0]
    top = rows[ry]
    bot = rows[ry + 1]
    fy = fy[:, None]
    return (top + (bot - top) * fy) * 2.0 - 1.0


def fractal_noise(
    seed: int, tag: int, ys: np.ndarray, xs: np.ndarray, cell: float, octaves: int = 3
) -> np.ndarray:
    """Sum of value-noise octaves (each half the size and weight of the last), in about [-1, 1]."""
    out = np.zeros((len(ys), len(xs)), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        out += amp * value_noise(seed, tag * 31 + o, ys, xs, cell / 2**o)
        total += amp
        amp *= 0.5
    return out / total


def worley(seed: int, tag: int, ys: np.ndarray, xs: np.ndarray, cell: float,
           jitter: float = 0.7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cellular noise on the grid ys x xs: one jittered point per lattice cell of size ``cell``.

    Returns
    -------
    f1, f2 : numpy.ndarray
        Distances to the nearest and second-nearest points (same units as ys, xs).
    value : numpy.ndarray
        A uniform [0, 1) value belonging to the nearest point (constant over its cell).
    """
    lo = (1 - jitter) / 2
    if not len(ys) or not len(xs):  # an empty window: nothing to hash (as before the lattice)
        empty = np.zeros((len(ys), len(xs)), np.float32)
        return np.full_like(empty, np.inf), np.full_like(empty, np.inf), empty
    iy = np.floor(ys / cell).astype(np.int64)
    ix = np.floor(xs / cell).astype(np.int64)
    # the points live on the lattice, far fewer cells than pixels: hash each cell once, then
    # gather per pixel (the same values as hashing per pixel, so windows still agree)
    ly = np.arange(iy.min() - 1, iy.max() + 2)[:, None]
    lx = np.arange(ix.min() - 1, ix.max() + 2)[None, :]
    py_cells = (ly + lo + jitter * hash_u01(seed, tag, ly, lx)) * cell
    px_cells = (lx + lo + jitter * hash_u01(seed, tag + 1, ly, lx)) * cell
    v_cells = hash_u01(seed, tag + 2, ly, lx)
    ry, rx = iy - ly[0, 0], ix - lx[0, 0]
    ys = np.asarray(ys, np.float64)
    xs = np.asarray(xs, np.float64)
    f1 = np.full((len(ys), len(xs)), np.inf, np.float32)
    f2 = np.full_like(f1, np.inf)
    val = np.zeros_like(f1)
    # rows in one lattice row see the same nine points per column: gather them once per band
    # of rows (a row of W values) instead of once per pixel; the arithmetic is unchanged
    for k in np.unique(ry):
        rows = np.flatnonzero(ry == k)
        band = slice(rows[0], rows[-1] + 1) if rows[-1] - rows[0] + 1 == len(rows) else rows
        by = ys[band][:, None]
        b1, b2, bv = f1[band], f2[band], val[band]
        for oy in (-1, 0, 1):
            for ox in (-1, 0, 1):
                cy, cx = k + oy, rx + ox
                d = np.hypot(by - py_cells[cy, cx], (xs - px_cells[cy, cx])[None, :]
                             ).astype(np.float32)
                closer = d < b1
                b2 = np.minimum(b2, np.maximum(b1, d))
                bv = np.where(closer, v_cells[cy, cx][None, :], bv)
                b1 = np.minimum(b1, d)
        f1[band], f2[band], val[band] = b1, b2, bv
    return f1, f2, val
