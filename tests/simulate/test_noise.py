"""The procedural noise: lattice-hashed fast paths give the per-pixel definition's values."""

import numpy as np

from napari_omniseg.simulate.noise import hash_u01, value_noise, worley


def _worley_per_pixel(seed, tag, ys, xs, cell, jitter):
    """Cellular noise by its definition: every pixel looks at its 3 x 3 lattice cells."""
    lo = (1 - jitter) / 2
    f1 = np.full((len(ys), len(xs)), np.inf, np.float32)
    f2 = np.full_like(f1, np.inf)
    val = np.zeros_like(f1)
    iy = np.floor(ys / cell).astype(np.int64)[:, None]
    ix = np.floor(xs / cell).astype(np.int64)[None, :]
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            cy, cx = iy + oy, ix + ox
            py = (cy + lo + jitter * hash_u01(seed, tag, cy, cx)) * cell
            px = (cx + lo + jitter * hash_u01(seed, tag + 1, cy, cx)) * cell
            d = np.hypot(ys[:, None] - py, xs[None, :] - px).astype(np.float32)
            closer = d < f1
            f2 = np.minimum(f2, np.maximum(f1, d))
            val = np.where(closer, hash_u01(seed, tag + 2, cy, cx), val)
            f1 = np.minimum(f1, d)
    return f1, f2, val


def test_worley_equals_its_per_pixel_definition():
    ys = (np.arange(-37, 91) + 0.5) * 0.25
    xs = (np.arange(200, 331) + 0.5) * 0.25
    for got, want in zip(worley(3, 22, ys, xs, 5.5), _worley_per_pixel(3, 22, ys, xs, 5.5, 0.7)):
        np.testing.assert_array_equal(got, want)


def test_worley_rows_in_any_order():
    """Rows need not be sorted or contiguous per lattice row (a coarse or shuffled grid)."""
    ys = np.random.default_rng(0).permutation((np.arange(60) + 0.5) * 0.7)
    xs = (np.arange(50) + 0.5) * 0.7
    for got, want in zip(worley(1, 16, ys, xs, 9.0, 0.8),
                         _worley_per_pixel(1, 16, ys, xs, 9.0, 0.8)):
        np.testing.assert_array_equal(got, want)


def test_worley_window_agrees_with_the_whole():
    ys = (np.arange(300) + 0.5) * 0.25
    xs = (np.arange(280) + 0.5) * 0.25
    whole = worley(5, 40, ys, xs, 20.0, 0.8)
    part = worley(5, 40, ys[77:190], xs[13:251], 20.0, 0.8)
    for w, p in zip(whole, part):
        np.testing.assert_array_equal(w[77:190, 13:251], p)


def test_value_noise_equals_its_corner_definition():
    ys = (np.arange(-50, 70) + 0.5) * 0.5
    xs = (np.arange(10, 140) + 0.5) * 0.5
    cell = 6.0
    ty, tx = ys / cell, xs / cell
    iy, ix = np.floor(ty).astype(np.int64)[:, None], np.floor(tx).astype(np.int64)[None, :]
    fy = (ty - np.floor(ty)).astype(np.float32)[:, None]
    fx = (tx - np.floor(tx)).astype(np.float32)[None, :]
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    top = hash_u01(2, 12, iy, ix) + (hash_u01(2, 12, iy, ix + 1) - hash_u01(2, 12, iy, ix)) * fx
    bot = hash_u01(2, 12, iy + 1, ix) + (
        hash_u01(2, 12, iy + 1, ix + 1) - hash_u01(2, 12, iy + 1, ix)) * fx
    want = (top + (bot - top) * fy) * 2.0 - 1.0
    got = value_noise(2, 12, ys, xs, cell)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
