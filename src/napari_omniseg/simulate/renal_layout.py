"""Where the structures of a synthetic kidney cortex are: glomeruli, arteries, tubules, capillaries.

All positions and sizes are in micrometres. Every object is drawn from a random generator keyed
by the slide seed and the object's global grid cell, so the layout of any window can be worked out
on its own and agrees with the layout of its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import OmnisegInputError

# Grid cells (um) in which candidates are drawn, and how often a cell holds one.
GLOM_CELL, GLOM_P = 430.0, 0.42
ARTERY_CELL, ARTERY_P = 900.0, 0.45
TUBULE_CELL = 54.0
PT_FRACTION = 0.62

# Sizes in um (diameters are twice the radii).
GLOM_RADIUS = (75.0, 120.0)       # capsule 150-240 um across
ARTERY_RADIUS = (35.0, 85.0)
PT_RADIUS = (28.0, 33.5)
DT_RADIUS = (18.5, 25.0)
PTC_SEMI_AXES = ((3.2, 5.5), (2.6, 4.0))  # (major, minor) lumen semi-axes: 5-11 um lumens
#: Slit capillaries along the side two tubules share: the real ones in PAS at 40x (ki-dev
#: `train` masks) are 15-40 um long and 4-9 um wide, pressed between the tubules.
PTC_SLIT_SEMI_AXES = ((7.0, 17.0), (1.8, 4.0))
#: Small, often obliquely cut vessels: the ki-dev vessel masks at 10x are 37-127 um across
#: their minor axis (median about 60), up to 6 times as long (minor semi-axis, elongation).
SMALL_VESSEL_RADIUS = (18.0, 50.0)
SMALL_VESSEL_ELONGATION = (1.2, 4.0)
#: Veins: the lumen takes most of the profile (the wall is a few um of endothelium, smooth
#: muscle and collagen) and a vein with little pressure collapses into a flattened outline.
VEIN_LUMEN_SHARE = (0.82, 0.93)
VEIN_ELONGATION = (1.2, 3.0)
#: How far beyond a window a capillary's centre may lie and still matter to it (um): one that
#: reaches in (its major semi-axis and 3 um of room), or one that touches such a capillary
#: and so may remove it (:func:`_without_overlaps`).
PTC_REACH = 2 * PTC_SLIT_SEMI_AXES[0][1] + 22.0
#: Largest distance (um) from an object's centre to its boundary; bounds the search halo.
MAX_REACH = 140.0


def _rng(seed: int, tag: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, tag, *[int(k) + (1 << 30) for k in key]])


@dataclass(frozen=True)
class RenalAnatomy:
    """Shapes the simulator can draw beyond its default ones, each as a share (0: off).

    All off (the default) gives the same slides as before the options existed, bit for bit.

    Parameters
    ----------
    ptc_slits : float
        The share of neighbouring tubule pairs with a long slit capillary along their shared
        side, as real cortex has at 40x (otherwise only short, rounder capillaries).
    small_vessels : float
        The share of arteries drawn small and cut obliquely, as most real vessel profiles in
        a biopsy are (otherwise every artery is a large, nearly round cross-section).
    veins : float
        The share of vessels drawn as veins: a thin wall without an elastic lamina round a
        wide, irregular, often collapsed lumen, empty or packed with red cells, as many of
        the real vessel profiles are (otherwise every vessel is a thick-walled artery).
    """

    ptc_slits: float = 0.0
    small_vessels: float = 0.0
    veins: float = 0.0

    def __post_init__(self) -> None:
        for name in ("ptc_slits", "small_vessels", "veins"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise OmnisegInputError(f"{name} must be between 0 and 1, got {v}")

    def describe(self) -> str:
        """The options in use, in words (empty when all are off)."""
        parts = []
        if self.ptc_slits:
            parts.append(f"{self.ptc_slits:.0%} of neighbouring tubules with a slit capillary "
                         "between them")
        if self.small_vessels:
            parts.append(f"{self.small_vessels:.0%} of arteries small and cut obliquely")
        if self.veins:
            parts.append(f"{self.veins:.0%} of vessels veins")
        return ", ".join(parts)


@dataclass(frozen=True)
class Glomerulus:
    """A glomerulus: centre, capsule radius and wall, tuft centre and radius (µm)."""

    cy: float
    cx: float
    r_cap: float
    wall: float
    tuft_cy: float
    tuft_cx: float
    r_tuft: float
    key: tuple[int, int]


@dataclass(frozen=True)
class Artery:
    """An artery cross-section: centre, outer and lumen radii (µm), eccentricity, angle."""

    cy: float
    cx: float
    r_out: float
    r_lumen: float
    ecc: float
    theta: float
    key: tuple[int, int]
    small: bool = False  # a small, obliquely cut one (RenalAnatomy.small_vessels)
    vein: bool = False  # thin-walled, no elastic lamina (RenalAnatomy.veins)
    red_cells: float = 0.0  # the share of a vein's lumen packed with red cells

    def reach(self, y: float, x: float) -> float:
        """How far (um) a point lies from the centre, in units of the minor radius: the
        artery's outline is where it equals ``r_out``."""
        c, s = np.cos(self.theta), np.sin(self.theta)
        dy, dx = y - self.cy, x - self.cx
        return float(np.hypot((dy * s + dx * c) / self.ecc, dy * c - dx * s))


@dataclass(frozen=True)
class Tubule:
    """A tubule cross-section: centre, semi-axes (µm), angle and kind (proximal, distal)."""

    cy: float
    cx: float
    a: float  # semi-axis along theta
    b: float
    theta: float
    kind: int  # 1 proximal, 2 distal
    margin: float  # half-width of the interstitium it keeps from neighbours
    wall: float  # epithelium height; the lumen starts here
    lumen_wobble: float
    tone: float
    key: tuple[int, int]

    @property
    def weight(self) -> float:
        """Power-diagram weight: bigger tubules push their boundaries into smaller neighbours."""
        return 0.5 * (self.a * self.b)


@dataclass(frozen=True)
class Capillary:
    """A peritubular capillary cross-section: centre, semi-axes (µm), angle, red cells."""

    cy: float
    cx: float
    a: float
    b: float
    theta: float
    rbc: float  # how full of red cells the lumen is, 0-1
    key: tuple[int, ...]
    slit: bool = False  # a long one along a shared tubule side


def _cells(lo: float, hi: float, size: float) -> range:
    return range(int(np.floor(lo / size)), int(np.floor(hi / size)) + 1)


class RenalLayout:
    """The structures of one simulated slide.

    Parameters
    ----------
    seed : int
        Slide seed.
    anatomy : RenalAnatomy, optional
        Shapes drawn beyond the default ones (default: none, the slides as they always were).
    """

    def __init__(self, seed: int, anatomy: RenalAnatomy | None = None) -> None:
        self.seed = int(seed)
        self.anatomy = anatomy or RenalAnatomy()

    # -- glomeruli -----------------------------------------------------------------------------

    def _glom_candidate(self, cy: int, cx: int) -> tuple[Glomerulus, float] | None:
        rng = _rng(self.seed, 1, cy, cx)
        if rng.random() > GLOM_P:
            return None
        y = (cy + rng.uniform(0.15, 0.85)) * GLOM_CELL
        x = (cx + rng.uniform(0.15, 0.85)) * GLOM_CELL
        r = rng.uniform(*GLOM_RADIUS)
        wall = rng.uniform(2.5, 4.0)
        ang = rng.uniform(0, 2 * np.pi)
        off = rng.uniform(0.0, 0.10) * r
        r_tuft = r - wall - rng.uniform(3.0, 9.0) - off
        g = Glomerulus(y, x, r, wall, y + off * np.sin(ang), x + off * np.cos(ang), r_tuft,
                       (cy, cx))
        return g, rng.random()

    def glomeruli(self, y0: float, x0: float, y1: float, x1: float) -> list[Glomerulus]:
        """Glomeruli whose capsule may reach into the box [y0, y1) x [x0, x1) (um)."""
        m = GLOM_RADIUS[1]
        out = []
        for cy in _cells(y0 - m, y1 + m, GLOM_CELL):
            for cx in _cells(x0 - m, x1 + m, GLOM_CELL):
                if self._glom_accepted(cy, cx):
                    out.append(self._glom_candidate(cy, cx)[0])  # type: ignore[index]
        return out

    def _glom_accepted(self, cy: int, cx: int) -> bool:
        cand = self._glom_candidate(cy, cx)
        if cand is None:
            return False
        g, prio = cand
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy == dx == 0:
                    continue
                other = self._glom_candidate(cy + dy, cx + dx)
                if other is None:
                    continue
                o, oprio = other
                if np.hypot(o.cy - g.cy, o.cx - g.cx) < g.r_cap + o.r_cap + 40 and oprio > prio:
                    return False
        return True

    # -- arteries ------------------------------------------------------------------------------

    def arteries(self, y0: float, x0: float, y1: float, x1: float) -> list[Artery]:
        """Arteries that may reach into the box (um); none overlaps a glomerulus."""
        m = ARTERY_RADIUS[1]
        out = []
        for cy in _cells(y0 - m, y1 + m, ARTERY_CELL):
            for cx in _cells(x0 - m, x1 + m, ARTERY_CELL):
                rng = _rng(self.seed, 2, cy, cx)
                if rng.random() > ARTERY_P:
                    continue
                y = (cy + rng.uniform(0.15, 0.85)) * ARTERY_CELL
                x = (cx + rng.uniform(0.15, 0.85)) * ARTERY_CELL
                r = rng.uniform(*ARTERY_RADIUS)
                a = Artery(y, x, r, r * rng.uniform(0.32, 0.5), rng.uniform(1.0, 1.25),
                           rng.uniform(0, np.pi), (cy, cx))
                small = _rng(self.seed, 8, cy, cx)  # its own stream: 0 leaves slides as before
                if self.anatomy.small_vessels and small.random() < self.anatomy.small_vessels:
                    r = small.uniform(*SMALL_VESSEL_RADIUS)
                    lo, hi = SMALL_VESSEL_ELONGATION
                    ecc = small.uniform(lo, min(hi, (MAX_REACH - 10.0) / r))
                    a = replace(a, r_out=r, r_lumen=r * small.uniform(0.3, 0.5), ecc=ecc,
                                small=True)
                vein = _rng(self.seed, 9, cy, cx)  # its own stream, as above
                if self.anatomy.veins and vein.random() < self.anatomy.veins:
                    lo, hi = VEIN_ELONGATION
                    hi = max(lo, min(hi, (MAX_REACH - 10.0) / a.r_out))  # stays within reach
                    lumen = a.r_out * vein.uniform(*VEIN_LUMEN_SHARE)
                    ecc = max(a.ecc, vein.uniform(lo, hi))  # never rounder than it was
                    a = replace(a, r_lumen=lumen, ecc=ecc, vein=True,
                                red_cells=vein.uniform(0.1, 0.95))
                gl = self.glomeruli(y - r - 40, x - r - 40, y + r + 40, x + r + 40)
                if all(np.hypot(g.cy - y, g.cx - x) > g.r_cap + r * a.ecc + 30 for g in gl):
                    out.append(a)
        return out

    # -- tubules -------------------------------------------------------------------------------

    def tubules(self, y0: float, x0: float, y1: float, x1: float) -> list[Tubule]:
        """Tubules seeded in the box grown by a margin, outside glomeruli and arteries."""
        m = 3 * TUBULE_CELL
        gl = self.glomeruli(y0 - m, x0 - m, y1 + m, x1 + m)
        ar = self.arteries(y0 - m, x0 - m, y1 + m, x1 + m)
        out = []
        for cy in _cells(y0 - m, y1 + m, TUBULE_CELL):
            for cx in _cells(x0 - m, x1 + m, TUBULE_CELL):
                rng = _rng(self.seed, 3, cy, cx)
                y = (cy + 0.5 + rng.uniform(-0.32, 0.32)) * TUBULE_CELL
                x = (cx + 0.5 + rng.uniform(-0.32, 0.32)) * TUBULE_CELL
                if any(np.hypot(g.cy - y, g.cx - x) < g.r_cap + 10 for g in gl):
                    continue
                # tubules crowd round a small vessel's outline, not round its longest radius
                if any(a.reach(y, x) < a.r_out + 10 if a.small
                       else np.hypot(a.cy - y, a.cx - x) < a.r_out * a.ecc + 10 for a in ar):
                    continue
                if rng.random() < PT_FRACTION:
                    kind, r = 1, rng.uniform(*PT_RADIUS)
                    wall = r * rng.uniform(0.55, 0.85)
                    wobble = rng.uniform(3.0, 6.0)
                else:
                    kind, r = 2, rng.uniform(*DT_RADIUS)
                    wall = rng.uniform(7.5, 11.0)
                    wobble = rng.uniform(1.0, 3.0)
                elong = rng.uniform(1.0, 1.3)
                out.append(Tubule(
                    y, x, r * elong, r, rng.uniform(0, np.pi), kind,
                    margin=rng.uniform(0.6, 1.6), wall=wall, lumen_wobble=wobble,
                    tone=rng.uniform(-1, 1), key=(cy, cx),
                ))
        return out

    def capillaries(self, tubules: list[Tubule], y0: float, x0: float, y1: float,
                    x1: float) -> list[Capillary]:
        """Peritubular capillaries at the junctions between neighbouring tubules.

        They sit at the corners of the tubules' Voronoi cells (Delaunay circumcentres) and, less
        often, midway along a shared side. Each is keyed by the tubules around it.
        """
        from scipy.spatial import Delaunay

        if len(tubules) < 3:
            return []
        pts = np.array([[t.cy, t.cx] for t in tubules])
        tri = Delaunay(pts)
        out: list[Capillary] = []
        seen_edges: set[tuple] = set()
        for simplex in tri.simplices:
            p = pts[simplex]
            keys = sorted(tubules[i].key for i in simplex)
            c = _circumcentre(p)
            if c is None or np.max(np.hypot(*(p - c).T)) > 1.2 * TUBULE_CELL:
                continue
            if y0 - PTC_REACH <= c[0] < y1 + PTC_REACH and x0 - PTC_REACH <= c[1] < x1 + PTC_REACH:
                rng = _rng(self.seed, 4, *[k for key in keys for k in key])
                if rng.random() < 0.8:
                    out.append(self._capillary(c, rng, tuple(k for key in keys for k in key)))
            for i, j in ((0, 1), (1, 2), (0, 2)):
                a, b = simplex[i], simplex[j]
                ka, kb = sorted((tubules[a].key, tubules[b].key))
                edge = (*ka, *kb)
                if edge in seen_edges:
                    continue
                seen_edges.add(edge)
                mid = (pts[a] + pts[b]) / 2
                if not (y0 - PTC_REACH <= mid[0] < y1 + PTC_REACH
                        and x0 - PTC_REACH <= mid[1] < x1 + PTC_REACH):
                    continue
                d = pts[b] - pts[a]
                if np.hypot(*d) > 1.5 * TUBULE_CELL:
                    continue
                rng = _rng(self.seed, 5, *edge)
                short = rng.random() < 0.3  # drawn first: no slits, the same slide as before
                slits = self.anatomy.ptc_slits
                if slits and _rng(self.seed, 6, *edge).random() < slits:
                    cap = self._slit(mid, _rng(self.seed, 7, *edge), edge)
                elif short:
                    cap = self._capillary(mid, rng, edge)
                else:
                    continue
                # lie along the shared side: perpendicular to the line joining the centres
                out.append(replace(cap, theta=float(np.arctan2(d[1], d[0]) + np.pi / 2)))
        return _without_overlaps(out)

    def _slit(self, c: np.ndarray, rng: np.random.Generator, key: tuple) -> Capillary:
        """A long, mostly empty capillary pressed between two tubules."""
        a = rng.uniform(*PTC_SLIT_SEMI_AXES[0])
        b = rng.uniform(*PTC_SLIT_SEMI_AXES[1])
        return Capillary(float(c[0]), float(c[1]), a, b, 0.0,
                         float(rng.choice([0.0, 0.5, 0.9], p=[0.7, 0.2, 0.1])), key, slit=True)

    def _capillary(self, c: np.ndarray, rng: np.random.Generator, key: tuple) -> Capillary:
        a = rng.uniform(*PTC_SEMI_AXES[0])
        b = min(a, rng.uniform(*PTC_SEMI_AXES[1]))
        return Capillary(float(c[0]), float(c[1]), a, b, rng.uniform(0, np.pi),
                         float(rng.choice([0.0, 0.5, 0.9, 1.0], p=[0.45, 0.2, 0.2, 0.15])), key)


def _without_overlaps(caps: list[Capillary]) -> list[Capillary]:
    """Drop a capillary that would overlap one that outranks it (a global, tile-free rule).

    Four nearly co-circular tubules give two almost identical junctions; one capillary is kept.
    A slit outranks a round capillary (it is the rarer, larger shape); otherwise the smaller
    key wins.
    """
    if len(caps) < 2:
        return caps
    from scipy.spatial import cKDTree

    pts = np.array([[c.cy, c.cx] for c in caps])
    tree = cKDTree(pts)
    keep = []
    for i, c in enumerate(caps):
        near = tree.query_ball_point(pts[i], c.a + PTC_SLIT_SEMI_AXES[0][1] + 2.0)
        if not any(j != i and _outranks(caps[j], c) and _overlap(caps[j], c) for j in near):
            keep.append(c)
    return keep


def _outranks(d: Capillary, c: Capillary) -> bool:
    return d.slit > c.slit or (d.slit == c.slit and d.key < c.key)


def _overlap(c: Capillary, d: Capillary, gap: float = 1.5) -> bool:
    """Whether two capillaries come closer than ``gap`` (round ones as circles of radius a,
    a slit as the capsule round its major axis)."""
    if not (c.slit or d.slit):
        return bool(np.hypot(c.cy - d.cy, c.cx - d.cx) <= c.a + d.a + gap)
    pc, pd = _axis_points(c), _axis_points(d)
    dist = np.hypot(*(pc[:, None, :] - pd[None, :, :]).transpose(2, 0, 1)).min()
    return bool(dist <= c.b + d.b + gap)


def _axis_points(c: Capillary, n: int = 9) -> np.ndarray:
    """Points along a capillary's major axis, the ends a minor semi-axis short of the tips."""
    half = max(c.a - c.b, 0.0) if c.slit else 0.0
    t = np.linspace(-half, half, n)[:, None]
    return np.array([c.cy, c.cx]) + t * np.array([np.sin(c.theta), np.cos(c.theta)])


def _circumcentre(p: np.ndarray) -> np.ndarray | None:
    (ay, ax), (by, bx), (cy, cx) = p
    d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    if abs(d) < 1e-9:
        return None
    a2, b2, c2 = ax * ax + ay * ay, bx * bx + by * by, cx * cx + cy * cy
    ux = (a2 * (by - cy) + b2 * (cy - ay) + c2 * (ay - by)) / d
    uy = (a2 * (cx - bx) + b2 * (ax - cx) + c2 * (bx - ax)) / d
    return np.array([uy, ux])
