"""Rendering a window of a synthetic kidney cortex at 40x (0.25 um/px).

Geometry is evaluated as signed distances (um, positive inside): tubules on a 1 um grid
(then interpolated, which is exact enough for smooth distance fields), the few large objects and
the small capillaries directly at 40x. Materials painted from those distances become optical
density through the stain model (:mod:`.stains`). Masks come from the same distances, so they
match the picture pixel for pixel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .noise import fractal_noise, hash_u01, white_noise, worley
from .renal_layout import MAX_REACH, Artery, Capillary, Glomerulus, RenalLayout, Tubule
from .stains import MATERIALS, StainStyle

MPP = 0.25  # um per pixel at level 0 (40x)
F = 4  # level-0 pixels per 1 um geometry sample
PAD = 48  # pixel halo: nuclei reach 32 px, blur 4 px
M = {name: i for i, name in enumerate(MATERIALS)}
#: Order of the mask channels; same as the vocabulary's task ids.
MASK_ORDER = ("dt", "pt", "cap", "tuft", "ves", "ptc")

# zones used to place nuclei
(Z_GLASS, Z_INTER, Z_PT_BASAL, Z_PT, Z_DT, Z_LUMEN, Z_TUFT, Z_CAPSULE, Z_BOWMAN, Z_MEDIA,
 Z_ADVENT, Z_ARTLUMEN, Z_PTC) = range(13)
# zone: (acceptance probability on a 5 um lattice, semi-axes um (a lo, a hi, b lo, b hi), darkness)
_NUCLEI = {
    Z_PT_BASAL: (0.40, (2.6, 3.3, 2.3, 2.9), 0.80),
    Z_DT: (0.75, (2.3, 3.0, 2.0, 2.6), 0.95),
    Z_TUFT: (0.95, (2.0, 2.8, 1.6, 2.4), 1.00),
    Z_CAPSULE: (0.45, (2.6, 3.6, 1.0, 1.5), 0.95),
    Z_INTER: (0.12, (2.4, 4.5, 1.3, 2.2), 1.05),
    Z_MEDIA: (0.60, (4.5, 7.0, 1.0, 1.4), 0.95),
    Z_ADVENT: (0.15, (3.0, 5.0, 1.0, 1.5), 1.05),
    Z_PTC: (0.10, (2.5, 3.5, 1.0, 1.4), 1.00),
}
NUCLEUS_LATTICE = 5.0


def _soft_step(d: np.ndarray, width: float = 0.15) -> np.ndarray:
    """Anti-aliased inside indicator of a signed distance in um (0 outside, 1 inside)."""
    return np.clip(d / (2 * width) + 0.5, 0.0, 1.0)


def _band(d: np.ndarray, lo: float, hi: float, width: float = 0.15) -> np.ndarray:
    return _soft_step(d - lo, width) * _soft_step(hi - d, width)


class RenalRenderer:
    """Renders windows of one synthetic slide.

    Parameters
    ----------
    layout : RenalLayout
        Where the structures are.
    style : StainStyle
        How the slide is stained.
    tissue_fn : callable, optional
        ``tissue_fn(ys_um, xs_um) -> signed distance to the tissue edge`` (positive in tissue);
        None means tissue everywhere.
    """

    def __init__(self, layout: RenalLayout, style: StainStyle, tissue_fn=None) -> None:
        self.layout = layout
        self.style = style
        self.seed = layout.seed
        self.tissue_fn = tissue_fn
        self.nuc_od = style.material_od[M["nucleus"]]

    # ------------------------------------------------------------------------------------------

    def render(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB ``(h, w, 3)`` uint8 and masks ``(6, h, w)`` uint8 of a level-0 window."""
        Y0 = ((y0 - PAD) // F) * F
        X0 = ((x0 - PAD) // F) * F
        Y1 = -((-(y0 + h + PAD)) // F) * F
        X1 = -((-(x0 + w + PAD)) // F) * F
        rgb, masks = self._render_aligned(Y0, X0, Y1 - Y0, X1 - X0)
        sy, sx = y0 - Y0, x0 - X0
        return rgb[sy:sy + h, sx:sx + w], masks[:, sy:sy + h, sx:sx + w]

    def _render_aligned(self, Y0: int, X0: int, H: int, W: int):
        seed = self.seed
        ys = (np.arange(Y0, Y0 + H) + 0.5) * MPP  # pixel centres in um
        xs = (np.arange(X0, X0 + W) + 0.5) * MPP
        box = (ys[0] - 1, xs[0] - 1, ys[-1] + 1, xs[-1] + 1)
        grow = MAX_REACH
        big = (box[0] - grow, box[1] - grow, box[2] + grow, box[3] + grow)

        gloms = self.layout.glomeruli(*big)
        arts = self.layout.arteries(*big)
        tubs = self.layout.tubules(*box)
        caps = self.layout.capillaries(tubs, *box)

        # coarse (1 um) grid covering the window plus one sample for interpolation
        kc0y, kc0x = Y0 // F - 1, X0 // F - 1
        cy = np.arange(kc0y, kc0y + H // F + 3) + 0.5
        cx = np.arange(kc0x, kc0x + W // F + 3) + 0.5

        tub_sd_c, tid_c = _tubule_field(tubs, cy, cx)
        excl = _exclusion_field(gloms, arts, caps, cy, cx)
        tub_sd_c = np.minimum(tub_sd_c, excl)

        up = _Upsampler(Y0, X0, H, W, kc0y, kc0x)
        tub_d = up.linear(tub_sd_c)
        tid = up.nearest(tid_c)
        lf = up.linear(fractal_noise(seed, 11, cy, cx, 60.0, 2))  # stain unevenness
        med = up.linear(fractal_noise(seed, 12, cy, cx, 6.0, 2))  # lumen shapes, fibres
        fine = ndimage.gaussian_filter(white_noise(seed, 13, Y0, X0, H, W), 1.0) * 2.2
        grain = ndimage.gaussian_filter(white_noise(seed, 15, Y0, X0, H, W), 2.5) * 5.0
        f1, f2, _ = worley(seed, 16, cy, cx, 9.0, jitter=0.8)
        border = _band(up.linear(f2 - f1), -1.0, 0.7, 0.2)  # epithelial cell borders

        tissue = np.ones((H, W), np.float32)
        if self.tissue_fn is not None:
            tissue = _soft_step(up.linear(self.tissue_fn(cy, cx)), 1.0)

        od = np.zeros((3, H, W), np.float32)
        zone = np.full((H, W), Z_INTER, np.int8)
        occupied = np.zeros((H, W), np.float32)
        masks = np.zeros((6, H, W), bool)

        def paint(mat: str, conc: np.ndarray, sl=(slice(None), slice(None))) -> None:
            v = self.style.material_od[M[mat]]
            for c in range(3):
                od[c][sl] += v[c] * conc

        # ---- tubules
        kinds = np.array([t.kind for t in tubs] + [0], np.int8)
        walls = np.array([t.wall for t in tubs] + [0], np.float32)
        wobble = np.array([t.lumen_wobble for t in tubs] + [0], np.float32)
        tone = np.array([t.tone for t in tubs] + [0], np.float32)
        kind = kinds[tid]
        inside = tub_d > 0
        lumen_sd = tub_d - walls[tid] + wobble[tid] * med
        in_s = _soft_step(tub_d)
        lum_s = _soft_step(lumen_sd) * in_s
        epi = in_s - lum_s
        is_pt = kind == 1
        is_dt = kind == 2
        tex = (1.0 + 0.2 * fine + 0.25 * grain) * (1 - 0.3 * border)
        paint("cyto_pt", epi * is_pt * (0.9 + 0.1 * tone[tid]) * tex)
        paint("cyto_dt", epi * is_dt * (0.9 + 0.1 * tone[tid]) * tex)
        paint("brush", is_pt * _band(lumen_sd, -2.0, 0.0) * in_s * (0.85 + 0.3 * fine))
        paint("bm", _band(tub_d, 0.0, 0.9) + 0.18 * epi * border)
        paint("plasma", lum_s * (0.25 + 0.2 * med + 0.15 * is_pt))
        occupied = np.maximum(occupied, in_s)
        masks[0] = inside & is_dt
        masks[1] = inside & is_pt
        zone[inside & (lumen_sd <= 0)] = Z_DT
        zone[inside & is_pt & (lumen_sd <= 0)] = Z_PT
        zone[inside & is_pt & (tub_d > 2.5) & (tub_d < 6.5) & (lumen_sd < -2)] = Z_PT_BASAL
        zone[inside & is_dt & ((tub_d < 2.0) | (lumen_sd > -1.8))] = Z_LUMEN
        zone[inside & (lumen_sd > 0)] = Z_LUMEN

        # ---- peritubular capillaries, glomeruli, arteries: evaluated at 40x in their boxes
        for c in caps:
            self._paint_capillary(c, ys, xs, paint, zone, occupied, masks, fine)
        for g in gloms:
            self._paint_glomerulus(g, ys, xs, paint, zone, occupied, masks, fine)
        for a in arts:
            self._paint_artery(a, ys, xs, paint, zone, occupied, masks, fine, med)

        # ---- interstitium: loose collagen wherever no structure is
        free = 1.0 - occupied
        paint("collagen", free * np.clip(0.42 + 0.35 * med + 0.15 * fine + 0.2 * grain, 0.05, 1.0))

        # ---- nuclei on top of everything
        nuc = self._nuclei(Y0, X0, H, W, zone, arts, fine)
        od = od * (1.0 - 0.8 * nuc)[None] + nuc[None] * self.nuc_od[:, None, None] * (
            0.9 + 0.2 * fine
        )[None]

        od *= (1.0 + 0.12 * lf)[None] * tissue[None]
        od += 0.012 * (1 - tissue)[None]  # glass is not perfectly clear
        sigma = self.style.blur_px
        for c in range(3):
            od[c] = ndimage.gaussian_filter(od[c], sigma, truncate=3.0)
        rgb = self._to_rgb(od, seed, Y0, X0, H, W)
        masks &= (tissue > 0.5)[None]
        return rgb, masks.astype(np.uint8)

    def _to_rgb(self, od, seed, Y0, X0, H, W) -> np.ndarray:
        from .stains import od_to_rgb

        return od_to_rgb(od.transpose(1, 2, 0), self.style, white_noise(seed, 14, Y0, X0, H, W))

    # ------------------------------------------------------------------------------------------

    def _paint_capillary(self, c: Capillary, ys, xs, paint, zone, occupied, masks, fine):
        wall = 0.7
        sl, yy, xx = _box(ys, xs, c.cy, c.cx, c.a + wall + 1.0)
        if sl is None:
            return
        e = _ellipse_radius(yy - c.cy, xx - c.cx, c.a, c.b, c.theta)
        sd_lumen = (1 - e) * c.b
        sd_out = sd_lumen + wall
        lum = _soft_step(sd_lumen)
        out = _soft_step(sd_out)
        paint("bm", (out - lum) * 0.7, sl)
        paint("cyto_dt", (out - lum) * 0.3, sl)
        paint("rbc", lum * c.rbc * np.clip(0.8 + 0.4 * fine[sl], 0, 1.2), sl)
        paint("plasma", lum * (1 - c.rbc) * 0.3, sl)
        occupied[sl] = np.maximum(occupied[sl], out)
        masks[5][sl] |= sd_out > 0
        zone[sl][(sd_out > 0) & (sd_lumen <= 0)] = Z_PTC
        zone[sl][sd_lumen > 0] = Z_LUMEN

    def _paint_glomerulus(self, g: Glomerulus, ys, xs, paint, zone, occupied, masks, fine):
        sl, yy, xx = _box(ys, xs, g.cy, g.cx, g.r_cap * 1.1 + 2)
        if sl is None:
            return
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 21, *(k + (1 << 30) for k in g.key)])
        dy, dx = yy - g.cy, xx - g.cx
        rho = np.hypot(dy, dx)
        th = np.arctan2(dy, dx)
        p = rng.uniform(0, 2 * np.pi, 3)
        r_th = g.r_cap * (1 + 0.035 * np.cos(2 * th + p[0]) + 0.02 * np.cos(3 * th + p[1]))
        cap_d = r_th - rho
        # lobulated tuft: a central disc and a ring of lobules, smoothly united
        n = int(rng.integers(5, 9))
        centres = [(g.tuft_cy, g.tuft_cx, 0.55 * g.r_tuft)]
        for k in range(n):
            ang = p[2] + 2 * np.pi * k / n + rng.uniform(-0.25, 0.25)
            dist = g.r_tuft * rng.uniform(0.42, 0.58)
            centres.append((g.tuft_cy + dist * np.sin(ang), g.tuft_cx + dist * np.cos(ang),
                            g.r_tuft * rng.uniform(0.38, 0.5)))
        sds = np.stack([r - np.hypot(yy - y, xx - x) for y, x, r in centres])
        k_smooth = 3.0
        tuft_sd = k_smooth * np.log(np.exp(sds / k_smooth).sum(0))  # smooth max
        tuft_sd = np.minimum(tuft_sd, cap_d - g.wall - 1.5)
        # capillary loops: small, irregular lumens between mesangial areas (Worley cells)
        f1, _, cell_h = worley(self.seed, 22, yy[:, 0], xx[0], 5.5)
        loop_r = 1.1 + 1.6 * cell_h + 0.6 * fine[sl]
        loop_sd = loop_r - f1
        in_cap = _soft_step(cap_d)
        in_tuft = _soft_step(tuft_sd)
        loop = _soft_step(loop_sd) * in_tuft
        has_rbc = (cell_h * 7.3) % 1.0 < 0.3
        wall_band = _band(cap_d, 0.0, g.wall)
        paint("bm", _band(cap_d, 0.0, 1.0) * 1.1, sl)
        paint("cyto_dt", (wall_band - _band(cap_d, 0.0, 1.0)).clip(0) * 0.5, sl)
        paint("plasma", (in_cap - wall_band - in_tuft).clip(0) * 0.2, sl)
        paint("mesangium", (in_tuft - loop).clip(0) * (0.75 + 0.25 * fine[sl]), sl)
        paint("bm", _band(loop_sd, -0.8, 0.0) * in_tuft * 1.0, sl)
        paint("rbc", loop * has_rbc * (0.85 + 0.3 * fine[sl]), sl)
        paint("plasma", loop * ~has_rbc * 0.2, sl)
        occupied[sl] = np.maximum(occupied[sl], in_cap)
        masks[2][sl] |= cap_d > 0
        masks[3][sl] |= tuft_sd > 0
        z = zone[sl]
        z[cap_d > 0] = Z_BOWMAN
        z[(cap_d > 0) & (cap_d < g.wall)] = Z_CAPSULE
        z[(tuft_sd > 0) & (loop_sd < 0.5)] = Z_TUFT
        z[(tuft_sd > 0) & (loop_sd >= 0.5)] = Z_LUMEN

    def _paint_artery(self, a: Artery, ys, xs, paint, zone, occupied, masks, fine, med):
        sl, yy, xx = _box(ys, xs, a.cy, a.cx, a.r_out * a.ecc + 2)
        if sl is None:
            return
        dy, dx = yy - a.cy, xx - a.cx
        e = _ellipse_radius(dy, dx, a.ecc, 1.0, a.theta)  # radius in units of the minor axis
        th = np.arctan2(dy, dx)
        if a.vein:  # a floppy outline; a thin wall of one or two muscle layers, no lamina
            r_lum = a.r_lumen * (1 + 0.05 * np.sin(3 * th + a.theta) + 0.03 * np.sin(8 * th))
            intima = 1.0
            r_media = r_lum + 0.5 * (a.r_out - a.r_lumen)
        else:
            r_lum = a.r_lumen * (1 + 0.06 * np.sin(7 * th + a.theta))
            intima = 2.6
            r_media = r_lum + 0.7 * (a.r_out - a.r_lumen)
        out_sd = a.r_out - e
        lum = _soft_step(r_lum - e)
        media = _band(e, r_lum + intima, r_media, 0.4)
        advent = _band(e, r_media, a.r_out, 0.4)
        if not a.vein:
            r_iel = r_lum + 1.8 + 0.6 * np.sin(40 * th)
            paint("elastic", _band(e, r_iel - 0.5, r_iel + 0.5), sl)
        paint("cyto_dt", _band(e, r_lum, r_lum + 1.2) * 0.4, sl)
        stripes = 0.75 + 0.25 * np.sin(th * 0 + e * 2.2 + 3 * med[sl])
        paint("muscle", media * stripes * (0.9 + 0.2 * fine[sl]) * (0.7 if a.vein else 1.0), sl)
        paint("collagen", advent * (0.75 + 0.25 * fine[sl]), sl)
        f1, _, cell_h = worley(self.seed, 23, yy[:, 0], xx[0], 6.0)
        # a vein's blood pools: most of its red cells lie packed on one side of the lumen
        packed = (dy * np.cos(a.theta + 1.3) + dx * np.sin(a.theta + 1.3)
                  < (2 * a.red_cells - 1) * a.r_lumen) if a.vein else False
        rbc = (f1 < 3.3) & ((cell_h < 0.35) | packed)
        # pooled red cells lie thin in a section: paler than the few in an artery's lumen
        paint("rbc", lum * rbc * (0.6 if a.vein else 1.0), sl)
        paint("plasma", lum * 0.2, sl)
        occupied[sl] = np.maximum(occupied[sl], _soft_step(out_sd))
        masks[4][sl] |= out_sd > 0
        z = zone[sl]
        z[out_sd > 0] = Z_ADVENT
        z[(e < r_media) & (e > r_lum + intima)] = Z_MEDIA
        z[e <= r_lum + intima] = Z_ARTLUMEN

    def _nuclei(self, Y0, X0, H, W, zone, arts, fine) -> np.ndarray:
        """Nuclear stain concentration: jittered-lattice nuclei kept by the zone they fall in."""
        s = NUCLEUS_LATTICE
        iy = np.arange(int(np.floor(Y0 * MPP / s)) - 1, int(np.ceil((Y0 + H) * MPP / s)) + 1)
        ix = np.arange(int(np.floor(X0 * MPP / s)) - 1, int(np.ceil((X0 + W) * MPP / s)) + 1)
        IY, IX = np.meshgrid(iy, ix, indexing="ij")
        u = [hash_u01(self.seed, 30 + k, IY, IX) for k in range(6)]
        py = (IY + 0.1 + 0.8 * u[0]) * s / MPP - Y0  # pixel coordinates in the window
        px = (IX + 0.1 + 0.8 * u[1]) * s / MPP - X0
        ok = (py >= 0) & (py < H) & (px >= 0) & (px < W)
        py, px = py[ok], px[ok]
        u = [v[ok] for v in u]
        z = zone[py.astype(int), px.astype(int)]
        nuc = np.zeros((H, W), np.float32)
        for zid, (p, (alo, ahi, blo, bhi), dark) in _NUCLEI.items():
            sel = (z == zid) & (u[2] < p)
            for k in np.flatnonzero(sel):
                a = (alo + (ahi - alo) * u[3][k]) / MPP
                b = min(a, (blo + (bhi - blo) * u[4][k]) / MPP)
                theta = np.pi * u[5][k]
                if zid == Z_MEDIA and arts:
                    y_um, x_um = (py[k] + Y0) * MPP, (px[k] + X0) * MPP
                    art = min(arts, key=lambda r: (r.cy - y_um) ** 2 + (r.cx - x_um) ** 2)
                    theta = np.arctan2(y_um - art.cy, x_um - art.cx) + np.pi / 2
                _stamp(nuc, py[k], px[k], a, b, theta, dark * (0.85 + 0.3 * u[5][k]))
        return np.clip(nuc * (0.82 + 0.25 * fine), 0, 1.3)


# ---------------------------------------------------------------------------------------------
# geometry helpers


def _ellipse_radius(dy, dx, a, b, theta):
    """Normalised elliptical radius: 1 on an ellipse of semi-axes a (along theta) and b."""
    c, s = np.cos(theta), np.sin(theta)
    u = dy * s + dx * c
    v = dy * c - dx * s
    return np.sqrt((u / a) ** 2 + (v / b) ** 2)


def _box(ys, xs, cy, cx, r):
    """Slice of the window (pixel centres ys, xs in um) within r um of (cy, cx), with grids."""
    y0 = np.searchsorted(ys, cy - r)
    y1 = np.searchsorted(ys, cy + r)
    x0 = np.searchsorted(xs, cx - r)
    x1 = np.searchsorted(xs, cx + r)
    if y1 <= y0 or x1 <= x0:
        return None, None, None
    sl = (slice(y0, y1), slice(x0, x1))
    return sl, ys[y0:y1, None].astype(np.float32), xs[None, x0:x1].astype(np.float32)


def _tubule_field(tubs: list[Tubule], cy: np.ndarray, cx: np.ndarray):
    """Signed distance to the nearest tubule boundary (um, positive inside) and owner index.

    A tubule is its ellipse cut by its power-diagram cell (shrunk by its interstitial margin),
    with corners rounded by a soft minimum.
    """
    sd = np.full((len(cy), len(cx)), -30.0, np.float32)
    owner = np.full(sd.shape, -1, np.int32)
    if len(tubs) < 2:
        return sd, owner
    from scipy.spatial import cKDTree

    pts = np.array([[t.cy, t.cx] for t in tubs])
    wts = np.array([t.weight for t in tubs])
    tree = cKDTree(pts)
    k_soft = 2.5
    for i, t in enumerate(tubs):
        r = t.a + 1.0
        y0, y1 = np.searchsorted(cy, t.cy - r), np.searchsorted(cy, t.cy + r)
        x0, x1 = np.searchsorted(cx, t.cx - r), np.searchsorted(cx, t.cx + r)
        if y1 <= y0 or x1 <= x0:
            continue
        yy = cy[y0:y1, None]
        xx = cx[None, x0:x1]
        e = _ellipse_radius(yy - t.cy, xx - t.cx, t.a, t.b, t.theta)
        terms = [((1 - e) * t.b)]
        for j in tree.query_ball_point(pts[i], 2.5 * max(t.a, 30.0)):
            if j == i:
                continue
            d = pts[j] - pts[i]
            dist = np.hypot(*d)
            # power bisector: positive on tubule i's side
            hval = ((pts[j][0] ** 2 + pts[j][1] ** 2 - wts[j]) - (pts[i][0] ** 2 + pts[i][1] ** 2
                    - wts[i]) - 2 * (yy * d[0] + xx * d[1])) / (2 * dist)
            terms.append(hval - t.margin)
        stack = np.stack(np.broadcast_arrays(*terms)).astype(np.float32)
        m = stack.min(0)
        soft = m - k_soft * np.log(np.exp(-(stack - m) / k_soft).sum(0))
        region = sd[y0:y1, x0:x1]
        better = soft > region
        region[better] = soft[better]
        owner[y0:y1, x0:x1][better] = i
    return sd, owner


def _exclusion_field(gloms, arts, caps, cy, cx) -> np.ndarray:
    """Signed room left for tubules (um): negative within a gap of glomeruli, arteries, PTCs."""
    ex = np.full((len(cy), len(cx)), 1e3, np.float32)
    yy, xx = cy[:, None], cx[None, :]
    for g in gloms:
        ex = np.minimum(ex, np.hypot(yy - g.cy, xx - g.cx) - g.r_cap * 1.06 - 4.0)
    for a in arts:
        e = _ellipse_radius(yy - a.cy, xx - a.cx, a.ecc, 1.0, a.theta)
        ex = np.minimum(ex, e - a.r_out - 4.0)
    for c in caps:
        r = c.a + 3
        y0, y1 = np.searchsorted(cy, c.cy - r), np.searchsorted(cy, c.cy + r)
        x0, x1 = np.searchsorted(cx, c.cx - r), np.searchsorted(cx, c.cx + r)
        if y1 <= y0 or x1 <= x0:
            continue
        e = _ellipse_radius(cy[y0:y1, None] - c.cy, cx[None, x0:x1] - c.cx, c.a, c.b, c.theta)
        ex[y0:y1, x0:x1] = np.minimum(ex[y0:y1, x0:x1], (e - 1) * c.b - 1.8)
    return ex


def _stamp(field: np.ndarray, cy: float, cx: float, a: float, b: float, theta: float,
           value: float) -> None:
    """Max-blend an anti-aliased ellipse (semi-axes in pixels) into field."""
    r = int(np.ceil(a)) + 2
    y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, field.shape[0])
    x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, field.shape[1])
    if y1 <= y0 or x1 <= x0:
        return
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    e = _ellipse_radius(yy, xx, a, b, theta)
    v = np.clip((1 - e) * b + 0.5, 0, 1) * value * (0.85 + 0.15 * e)  # darker rim
    np.maximum(field[y0:y1, x0:x1], v, out=field[y0:y1, x0:x1])


class _Upsampler:
    """Interpolates 1 um samples (sample k at k + 0.5 um) onto the 40x pixel grid."""

    def __init__(self, Y0: int, X0: int, H: int, W: int, kc0y: int, kc0x: int) -> None:
        ty = (np.arange(Y0, Y0 + H) + 0.5) / F - 0.5 - kc0y
        tx = (np.arange(X0, X0 + W) + 0.5) / F - 0.5 - kc0x
        self.iy = np.floor(ty).astype(np.int64)
        self.ix = np.floor(tx).astype(np.int64)
        self.fy = (ty - self.iy).astype(np.float32)[:, None]
        self.fx = (tx - self.ix).astype(np.float32)[None, :]
        self.ny = np.round(ty).astype(np.int64)
        self.nx = np.round(tx).astype(np.int64)

    def linear(self, c: np.ndarray) -> np.ndarray:
        rows = c[self.iy] * (1 - self.fy) + c[self.iy + 1] * self.fy
        return (rows[:, self.ix] * (1 - self.fx) + rows[:, self.ix + 1] * self.fx).astype(
            np.float32
        )

    def nearest(self, c: np.ndarray) -> np.ndarray:
        return c[self.ny][:, self.nx]
