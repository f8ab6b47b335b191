"""A procedural anatomy prior for painted masks: the simulator's tissue drawn inside them.

A painted mask says where a tissue is, not what it looks like inside. This module draws, in
each painted region, the anatomy the simulator gives that tissue (:mod:`.renal_render`):
tubule epithelium along the region's border with a brush border (PT), basal nuclei and a
lumen; a glomerulus' capsule wall, Bowman's space and a tuft with capillary loops and
mesangial nuclei; an artery's adventitia, media with spindle nuclei and a lumen; capillary
lumens with red cells; loose interstitium with fibroblasts everywhere else. The materials go
through the simulator's stain model (:mod:`.stains`), so one painted mask gives H&E, PAS,
silver or trichrome.

Cartoon masks are expected: a region much wider than one tubule is split into tubule-sized
cells, a glomerulus painted as a disc without its tuft gets a tuft inside its capsule, an
artery of any size gets a lumen in proportion to its width. Unpainted pixels are interstitium:
the prior invents no structure the person did not paint.

Every quantity is local (distances are clipped at :data:`REACH_UM`, noise is hashed from
global coordinates), so a window rendered with :func:`prior_halo` pixels of context agrees
with the whole image: large masks are rendered chunk by chunk.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import renal_render as R
from .noise import fractal_noise, hash_u01, white_noise, worley
from .renal_render import M as _M
from .renal_render import _band, _ellipse_radius
from .renal_render import _soft_step as _soft
from .stains import od_to_rgb, stain_style

#: Distances inside a region are clipped here (um); also the reach of "how wide is it".
REACH_UM = 40.0
#: A painted proximal tubule region wider than this (um, centre to border) is split into
#: tubules of about this radius (the simulator's proximal tubules: 28-33.5 um).
TUBULE_RADIUS_UM = 32.0
#: The same for distal tubules (the simulator's: 18.5-25 um).
DT_RADIUS_UM = 22.0
_DT, _PT, _CAP, _TUFT, _VES, _PTC = range(6)

# nucleus zones
Z_NONE, Z_INTER, Z_TUB, Z_TUFT, Z_WALL, Z_MEDIA, Z_DTUB = range(7)
# zone: (acceptance on a 5 um lattice, semi-axes um, darkness): the simulator's nuclei, but for
# the proximal tubule's, which are spread over its whole epithelium rather than a basal band
_NUCLEI = {
    Z_INTER: R._NUCLEI[R.Z_INTER],
    Z_TUB: (0.55, (2.4, 3.2, 2.1, 2.8), 0.85),
    Z_DTUB: R._NUCLEI[R.Z_DT],
    Z_TUFT: R._NUCLEI[R.Z_TUFT],
    Z_WALL: R._NUCLEI[R.Z_CAPSULE],
    Z_MEDIA: R._NUCLEI[R.Z_MEDIA],
}
# tubule kind: (radius um, cell-pattern tag, wall as a share of the radius, wall bounds um,
# lumen-edge wobble um, nucleus zone). As in the simulator, which the segmenter reads: distal
# tubules smaller, with a low epithelium round a wide, smooth lumen and crowded nuclei;
# proximal ones larger, with a brush border and a narrower, ragged lumen.
_TUBULES = {
    _DT: (DT_RADIUS_UM, 42, 0.5, (2.5, 9.0), 0.7, Z_DTUB),
    _PT: (TUBULE_RADIUS_UM, 40, 0.6, (3.0, 16.0), 1.5, Z_TUB),
}
_LATTICE_UM = R.NUCLEUS_LATTICE
_MAX_NUCLEUS_UM = 7.0


def prior_halo(mpp: float) -> int:
    """Pixels of context a window needs for its pixels to match the whole image's."""
    return int(np.ceil((2 * REACH_UM + 2 * _MAX_NUCLEUS_UM + _LATTICE_UM) / mpp)) + 4


def _inside_distance(mask: np.ndarray, mpp: float) -> np.ndarray:
    """Distance (um) from each painted pixel to the region's border, clipped at REACH_UM;
    0 outside. Exact in a window with the halo: the nearest border is within the reach."""
    if not mask.any():
        return np.zeros(mask.shape, np.float32)
    # the nearest background pixel's index, then the distance in float32 from integer
    # offsets: scipy's own distances go through float64 index arrays at three times the cost
    near = ndimage.distance_transform_edt(mask, return_distances=False, return_indices=True)
    dy = near[0] - np.arange(mask.shape[0], dtype=near.dtype)[:, None]
    dx = near[1] - np.arange(mask.shape[1], dtype=near.dtype)[None, :]
    d2 = dy * dy
    d2 += dx * dx
    return np.minimum(np.sqrt(d2.astype(np.float32)) * np.float32(mpp), np.float32(REACH_UM))


def _width(d: np.ndarray, mpp: float) -> np.ndarray:
    """The largest inside distance within REACH_UM: how wide the region is around a pixel."""
    size = 2 * int(np.ceil(REACH_UM / mpp)) + 1
    return ndimage.maximum_filter(d, size=size, mode="constant")


def _paint_margin(mpp: float) -> int:
    """Pixels of context the drawing needs once the distances are known: a nucleus centred
    outside the output still reaches into it, and the optics blur spreads it further."""
    return int(np.ceil((2 * _MAX_NUCLEUS_UM + _LATTICE_UM + 1.0) / mpp)) + 8


def render_prior(masks: np.ndarray, stain: str, mpp: float, seed: int = 0, y0: int = 0,
                 x0: int = 0, crop: int = 0) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` anatomy for ``(6, H, W)`` painted tissue masks.

    Parameters
    ----------
    masks : numpy.ndarray
        Booleans per tissue in the vocabulary's order (dt, pt, cap, tuft, ves, ptc).
    stain : str
        Stain code of the image.
    mpp : float
        Micrometres per pixel of the masks.
    seed : int
        One seed gives one image (its stain batch and its cells).
    y0, x0 : int
        The window's top-left pixel in the whole image, so that windows agree.
    crop : int
        Pixels of the window's border left out of the result (context only; usually
        :func:`prior_halo`). Only the distances are computed there, so this is faster than
        cropping the result, and gives the same pixels.

    Returns
    -------
    numpy.ndarray
        The prior image, ``(H - 2 crop, W - 2 crop, 3)``; pixels within :func:`prior_halo` of
        the window's edge lack context.
    """
    full = np.asarray(masks).astype(bool)
    _, fh, fw = full.shape
    # the distances need the window's whole context; everything drawn from them is local
    # (noise hashed from coordinates, nuclei and blur a few µm across), so it is drawn only
    # on the result and a margin for those few µm: half the area of a tile's window at 40x
    k = max(0, crop - _paint_margin(mpp))
    inner = np.s_[k:fh - k, k:fw - k]
    masks = full[:, inner[0], inner[1]]
    _, h, w = masks.shape
    y0, x0 = y0 + k, x0 + k

    def distance(t: int) -> np.ndarray:
        return _inside_distance(full[t], mpp)[inner]

    def distance_and_width(t: int) -> tuple[np.ndarray, np.ndarray]:
        d = _inside_distance(full[t], mpp)
        return d[inner], _width(d, mpp)[inner]

    style = stain_style(stain, seed)
    ys = (np.arange(y0, y0 + h) + 0.5) * mpp
    xs = (np.arange(x0, x0 + w) + 0.5) * mpp
    fine = ndimage.gaussian_filter(white_noise(seed, 13, y0, x0, h, w), 1.0) * 2.2
    med = fractal_noise(seed, 12, ys, xs, 6.0, 2)
    grain = fractal_noise(seed, 15, ys, xs, 2.0, 1)
    od = np.zeros((3, h, w), np.float32)
    zone = np.full((h, w), Z_INTER, np.int8)
    occupied = np.zeros((h, w), np.float32)
    orient = np.zeros((h, w), np.float32)  # nucleus long-axis angle where it matters

    def paint(mat: str, conc: np.ndarray) -> None:
        od[:] += style.material_od[_M[mat]][:, None, None] * conc[None]

    # ---- tubules: split wide regions into tubule-sized cells, epithelium along the border
    for t, (size, tag, wall_share, wall_um, wobble, nucleus_zone) in _TUBULES.items():
        if not full[t].any():
            continue
        f1, f2, cell = worley(seed, tag, ys, xs, 1.4 * size, jitter=0.8)
        split = (f2 - f1) / 2 - 1.5  # half the gap to the neighbouring cell, minus a margin
        d, width = distance_and_width(t)
        wide = _soft(width - size, 3.0)
        tub = np.where(masks[t], np.minimum(d, split * wide + REACH_UM * (1 - wide)), -1.0)
        radius = np.minimum(width, 0.55 * size * wide + width * (1 - wide))
        wall = np.clip(wall_share * radius, *wall_um) * (0.85 + 0.3 * cell)
        lumen = tub - wall + wobble * med
        inside = _soft(tub, 0.3)
        lum = _soft(lumen, 0.3) * inside
        epi = inside - lum
        tex = 1.0 + 0.2 * fine + 0.25 * grain
        paint("cyto_pt" if t == _PT else "cyto_dt", epi * (0.9 + 0.1 * cell) * tex)
        if t == _PT:
            paint("brush", _band(lumen, -2.0, 0.0, 0.3) * inside * (0.85 + 0.3 * fine))
        paint("bm", _band(tub, 0.0, 0.9, 0.3))
        paint("plasma", lum * 0.3)
        occupied = np.maximum(occupied, inside)
        zone[(tub > 1.5) & (lumen < -1.5)] = nucleus_zone
        zone[masks[t] & (lumen >= -1.5)] = Z_NONE

    # ---- glomerulus: capsule wall, Bowman's space, a tuft with capillary loops
    cap_d = distance(_CAP)
    if full[_TUFT].any():
        tuft_d = np.where(masks[_TUFT], distance(_TUFT), -1.0)
    else:  # a disc painted as a glomerulus: its tuft fills it but for the capsule and space
        tuft_d = np.where(masks[_CAP], cap_d - 8.0 - 2.0 * med, -1.0)
    if full[_CAP].any() or full[_TUFT].any():
        in_cap = _soft(np.where(masks[_CAP], cap_d, -1.0), 0.3)
        in_tuft = _soft(tuft_d, 0.4)
        lf1, _, lcell = worley(seed, 22, ys, xs, 5.5)
        loop_d = 1.1 + 1.6 * lcell + 0.6 * fine - lf1
        loop = _soft(loop_d, 0.3) * in_tuft
        rbc = (lcell * 7.3) % 1.0 < 0.3
        wall = _band(cap_d, 0.0, 2.5, 0.3) * masks[_CAP]
        paint("bm", _band(cap_d, 0.0, 1.0, 0.3) * masks[_CAP] * 1.1)
        paint("cyto_dt", wall * 0.4)
        paint("plasma", np.clip(in_cap - wall - in_tuft, 0, 1) * 0.2)
        paint("mesangium", np.clip(in_tuft - loop, 0, 1) * (0.75 + 0.25 * fine))
        paint("bm", _band(loop_d, -0.8, 0.0, 0.3) * in_tuft)
        paint("rbc", loop * rbc * (0.85 + 0.3 * fine))
        paint("plasma", loop * ~rbc * 0.2)
        occupied = np.maximum(occupied, np.maximum(in_cap, in_tuft))
        zone[masks[_CAP]] = Z_NONE
        zone[masks[_CAP] & (cap_d < 2.5)] = Z_WALL
        zone[tuft_d > 0] = Z_NONE
        zone[(tuft_d > 0) & (loop_d < 0.5)] = Z_TUFT

    # ---- artery: adventitia, media of spindle cells, elastic lamina, a lumen
    if full[_VES].any():
        d, width = distance_and_width(_VES)
        width = np.maximum(width, 1.0)
        r_lum = 0.45 * width  # lumen edge, as inside distance from the outer border
        lum = _soft(d - (width - r_lum), 0.3) * masks[_VES]
        advent = masks[_VES] * _band(d, 0.0, 0.2 * width, 0.4)
        media = masks[_VES] * _band(d, 0.2 * width, width - r_lum - 2.6, 0.4)
        paint("elastic", _band(d, width - r_lum - 2.3, width - r_lum - 1.3, 0.3) * masks[_VES])
        paint("muscle", media * (0.75 + 0.25 * np.sin(d * 2.2 + 3 * med)) * (0.9 + 0.2 * fine))
        paint("collagen", advent * (0.75 + 0.25 * fine))
        af1, _, acell = worley(seed, 23, ys, xs, 6.0)
        paint("rbc", lum * ((af1 < 3.3) & (acell < 0.35)))
        paint("plasma", lum * 0.2)
        occupied = np.maximum(occupied, masks[_VES].astype(np.float32))
        gy, gx = np.gradient(d)
        orient = np.where(masks[_VES], np.arctan2(gy, gx) + np.pi / 2, orient)
        zone[masks[_VES]] = Z_INTER
        zone[(media > 0.5)] = Z_MEDIA
        zone[masks[_VES] & (lum > 0)] = Z_NONE

    # ---- peritubular capillaries: a thin wall around a lumen with red cells
    if full[_PTC].any():
        d = distance(_PTC)
        inside = _soft(np.where(masks[_PTC], d, -1.0), 0.2)
        lum = _soft(d - 0.7, 0.2) * masks[_PTC]
        has_rbc = hash_u01(seed, 41, np.floor(ys / 8)[:, None], np.floor(xs / 8)[None]) < 0.6
        paint("bm", (inside - lum) * 0.7)
        paint("cyto_dt", (inside - lum) * 0.3)
        paint("rbc", lum * has_rbc * np.clip(0.8 + 0.4 * fine, 0, 1.2))
        paint("plasma", lum * ~has_rbc * 0.3)
        occupied = np.maximum(occupied, inside)
        zone[masks[_PTC]] = Z_NONE

    free = 1.0 - occupied
    paint("collagen", free * np.clip(0.42 + 0.35 * med + 0.15 * fine + 0.2 * grain, 0.05, 1.0))
    nuc = np.clip(_nuclei(seed, y0, x0, h, w, mpp, zone, orient) * (0.82 + 0.25 * fine), 0, 1.3)
    od = od * (1.0 - 0.8 * nuc)[None] + nuc[None] * style.material_od[_M["nucleus"]][
        :, None, None] * (0.9 + 0.2 * fine)[None]
    sigma = style.blur_px * 0.25 / mpp  # the optics blur in um, not in pixels
    for c in range(3):
        od[c] = ndimage.gaussian_filter(od[c], sigma, truncate=3.0)
    rgb = od_to_rgb(od.transpose(1, 2, 0), style, white_noise(seed, 14, y0, x0, h, w))
    edge = crop - k
    return rgb[edge:h - edge, edge:w - edge] if edge else rgb


def _nuclei(seed: int, y0: int, x0: int, h: int, w: int, mpp: float, zone: np.ndarray,
            orient: np.ndarray) -> np.ndarray:
    """Nuclear stain concentration: jittered-lattice nuclei kept by the zone their centre
    falls in, stamped as anti-aliased ellipses (vectorised over nuclei, looped over offsets)."""
    s = _LATTICE_UM
    iy = np.arange(int(np.floor(y0 * mpp / s)) - 1, int(np.ceil((y0 + h) * mpp / s)) + 1)
    ix = np.arange(int(np.floor(x0 * mpp / s)) - 1, int(np.ceil((x0 + w) * mpp / s)) + 1)
    IY, IX = np.meshgrid(iy, ix, indexing="ij")
    u = [hash_u01(seed, 30 + k, IY, IX).ravel() for k in range(6)]
    cy = (IY.ravel() + 0.1 + 0.8 * u[0]) * s / mpp - y0
    cx = (IX.ravel() + 0.1 + 0.8 * u[1]) * s / mpp - x0
    ok = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
    cy, cx, u = cy[ok], cx[ok], [v[ok] for v in u]
    z = zone[cy.astype(int), cx.astype(int)]
    a = np.zeros(len(cy), np.float32)
    b = np.zeros_like(a)
    dark = np.zeros_like(a)
    for zid, (p, (alo, ahi, blo, bhi), dk) in _NUCLEI.items():
        sel = (z == zid) & (u[2] < p)
        a[sel] = (alo + (ahi - alo) * u[3][sel]) / mpp
        b[sel] = np.minimum(a[sel], (blo + (bhi - blo) * u[4][sel]) / mpp)
        dark[sel] = dk * (0.85 + 0.3 * u[5][sel])
    keep = a > 0
    cy, cx, a, b, dark = cy[keep], cx[keep], a[keep], b[keep], dark[keep]
    theta = np.where(z[keep] == Z_MEDIA, orient[cy.astype(int), cx.astype(int)],
                     np.pi * u[5][keep])
    nuc = np.zeros((h, w), np.float32)
    r = int(np.ceil(a.max())) + 1 if len(a) else 0
    iy0, ix0 = np.floor(cy).astype(int), np.floor(cx).astype(int)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            py, px = iy0 + dy, ix0 + dx
            near = (np.abs(dy) <= a + 1) & (np.abs(dx) <= a + 1) & (py >= 0) & (py < h) & (
                px >= 0) & (px < w)
            if not near.any():
                continue
            e = _ellipse_radius(py[near] + 0.5 - cy[near], px[near] + 0.5 - cx[near], a[near],
                                b[near], theta[near])
            v = np.clip((1 - e) * b[near] + 0.5, 0, 1) * dark[near] * (0.85 + 0.15 * e)
            np.maximum.at(nuc, (py[near], px[near]), v.astype(np.float32))
    return nuc
