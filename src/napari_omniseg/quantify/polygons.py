"""Label images to polygons, band by band, with objects merged across band borders.

Polygons follow pixel edges exactly (GDAL's polygonize, through rasterio), so a polygon's
area is its object's pixel count and rasterising it by pixel centres gives the object back.
Pieces are 4-connected: two pixels touching only at a corner are two objects (an 8-connected
outline would touch itself at that corner, which QuPath and shapely call invalid).

Only one band of rows (about four million pixels) is read at a time. An object still touching
the band's last row is held back until the next band shows whether it goes on, so a whole-slide
mask is traced with memory bounded by one band plus the objects crossing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..run import Progress, ShouldStop, check_stop, report

#: Pixels read at a time: a band is as many whole rows as fit (at most 1024), so the memory a
#: band takes does not grow with the slide's width either.
BAND_PIXELS = 4 * 1024 * 1024
_MAX_BAND_ROWS = 1024


@dataclass
class TracedObject:
    """One connected object of a label image.

    Attributes
    ----------
    value : int
        Its label value.
    polygon : shapely.Polygon
        Outline in level-0 pixel coordinates (x right, y down, from the image's top-left
        corner), holes kept.
    """

    value: int
    polygon: Any

    @property
    def pixels(self) -> int:
        """Its area in pixels (exact: the outline follows pixel edges)."""
        return int(round(self.polygon.area))


def read_band(level0: Any, y0: int, y1: int) -> np.ndarray:
    """Rows ``y0:y1`` of a numpy, dask or zarr array as numpy."""
    band = level0[y0:y1]
    if hasattr(band, "compute"):
        # local scheduler: inside a cluster task the graph must not go back to the cluster
        band = band.compute(scheduler="synchronous")
    return np.asarray(band)


def trace_objects(level0: Any, region: Any = None, band_rows: int | None = None,
                  progress: Progress | None = None, should_stop: ShouldStop | None = None
                  ) -> Iterator[TracedObject]:
    """Every connected object of a 2D label image (value 0 is background), as polygons.

    Parameters
    ----------
    level0 : array
        ``(Y, X)`` integer labels; numpy, dask or zarr (read ``band_rows`` rows at a time).
    region : shapely geometry, optional
        Only what lies inside it (level-0 pixel coordinates, pixel centres decide) is traced;
        objects are cut at its border.
    band_rows : int, optional
        Rows per band (default: as many as :data:`BAND_PIXELS` allows, at most 1024).
    progress, should_stop
        The run contract (:mod:`napari_omniseg.run`), one step per band.

    Yields
    ------
    TracedObject
        In no particular order; an object is yielded once, whole.
    """
    from scipy import ndimage

    h, w = level0.shape[:2]
    if band_rows is None:
        band_rows = int(min(_MAX_BAND_ROWS, max(16, BAND_PIXELS // max(1, w))))
    n_bands = -(-h // band_rows)
    # pieces of objects that touch the previous band's last row, by their label in that band
    open_pieces: dict[int, list] = {}
    open_values: dict[int, int] = {}
    # an object can leave a band through several pieces of its last row (a U shape): each
    # such label points at the one its pieces are kept under
    open_alias: dict[int, int] = {}
    prev_labels: Any = None
    prev_row: Any = None
    four = ndimage.generate_binary_structure(2, 1)
    for b, y0 in enumerate(range(0, h, band_rows)):
        check_stop(should_stop)
        y1 = min(h, y0 + band_rows)
        band = read_band(level0, y0, y1)
        if region is not None:
            band = np.where(_inside(region, y0, band.shape), band, 0)
        comps, n = _components(band, four)
        values = np.zeros(n + 1, np.int64)
        values[comps.ravel()] = band.ravel()
        pieces = _polygons(comps, y0)
        # join this band's objects to the held-back ones they share an edge with
        groups = _UnionFind()
        if open_pieces:
            same = (prev_row == band[0]) & (band[0] != 0)
            for a, c in set(zip(prev_labels[same].tolist(), comps[0][same].tolist())):
                groups.union(("old", open_alias[a]), ("new", c))
        merged: dict[Any, list] = {}
        merged_values: dict[Any, int] = {}
        for a, ps in open_pieces.items():
            root = groups.find(("old", a))
            merged.setdefault(root, []).extend(ps)
            merged_values[root] = open_values[a]
        for c, p in pieces.items():
            root = groups.find(("new", c))
            merged.setdefault(root, []).append(p)
            merged_values[root] = int(values[c])
        last = set(np.unique(comps[-1]).tolist()) - {0} if y1 < h else set()
        open_pieces, open_values, open_alias = {}, {}, {}
        carried: dict[Any, int] = {}
        for c in sorted(last):
            open_alias[c] = carried.setdefault(groups.find(("new", c)), c)
        for root, ps in merged.items():
            if root in carried:
                open_pieces[carried[root]] = ps
                open_values[carried[root]] = merged_values[root]
            else:
                yield TracedObject(merged_values[root], _union(ps))
        prev_labels, prev_row = comps[-1], band[-1]
        report(progress, b + 1, n_bands, f"rows {y0}-{y1}")


def _components(band: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected pieces of equal value, numbered from 1 (0 stays background)."""
    from scipy import ndimage

    values = np.unique(band)
    values = values[values != 0]
    if len(values) <= 1:
        comps, n = ndimage.label(band != 0, structure)
        return comps.astype(np.int32), int(n)
    comps = np.zeros(band.shape, np.int32)
    n = 0
    for v in values:  # pieces of different values that touch are different objects
        lab, k = ndimage.label(band == v, structure)
        comps[lab > 0] = lab[lab > 0] + n
        n += int(k)
    return comps, n


def _polygons(comps: np.ndarray, y0: int) -> dict[int, Any]:
    """One pixel-edge polygon per component, shifted down to the band's first row."""
    from rasterio import features
    from rasterio.transform import Affine
    from shapely.geometry import shape

    out: dict[int, Any] = {}
    if not comps.any():
        return out
    for geom, value in features.shapes(comps, mask=comps > 0, connectivity=4,
                                       transform=Affine.translation(0, y0)):
        out[int(value)] = shape(geom)
    return out


def _union(pieces: list) -> Any:
    if len(pieces) == 1:
        return pieces[0]
    import shapely

    return shapely.union_all(pieces)


def _inside(region: Any, y0: int, shape: tuple[int, ...]) -> np.ndarray:
    """Pixels of rows ``y0 ..`` whose centres lie inside ``region``."""
    from rasterio import features
    from rasterio.transform import Affine

    return features.geometry_mask([region], out_shape=shape[:2],
                                  transform=Affine.translation(0, y0), invert=True)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, x: Any) -> Any:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb
