"""Label images as QuPath GeoJSON: classified detections (one per object) or annotations (one
per class), with measurements.

QuPath reads a FeatureCollection whose coordinates are full-resolution pixels from the image's
top-left corner. Each feature has an ``id`` (a UUID), a Polygon or MultiPolygon, and
``properties`` with ``objectType`` ("detection" or "annotation"), ``classification`` (``name``
and an RGB ``color`` of 0-255 integers) and ``measurements`` (a name -> number map).
Detections are written as they are traced, so a whole slide streams through with flat memory.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from typing import Any

from ..io.atomic import written_atomically
from ..io.labels import LabelImage
from ..run import Progress, ShouldStop
from .measure import Measured, measured_objects, minimum_sizes

#: Douglas-Peucker tolerance (pixels) for outlines: straightens the pixel staircase while a
#: rasterised outline still gives the mask back (Dice >= 0.99, docs/export.md).
SIMPLIFY_PX = 0.7


def simplified(polygon: Any, tolerance: float = SIMPLIFY_PX) -> Any:
    """The outline simplified, or as it was when simplifying would make it invalid or empty."""
    if tolerance <= 0:
        return polygon
    s = polygon.simplify(tolerance, preserve_topology=True)
    return s if (s.is_valid and not s.is_empty) else polygon


def _geometry(geom: Any) -> dict:
    from shapely.geometry import mapping

    g = mapping(geom)
    # outlines lie on pixel corners: integers read and compare exactly
    return {"type": g["type"], "coordinates": _integral(g["coordinates"])}


def _integral(coords: Any) -> Any:
    if isinstance(coords[0], (int, float)):
        return [int(c) if float(c).is_integer() else round(float(c), 3) for c in coords]
    return [_integral(c) for c in coords]


def feature(geom: Any, object_type: str, cls: Any, measurements: dict) -> dict:
    """One QuPath feature."""
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": _geometry(geom),
            "properties": {"objectType": object_type,
                           "classification": {"name": cls.name, "color": list(cls.color)},
                           "measurements": measurements}}


def same_grid(images: Sequence[LabelImage]) -> None:
    """Refuse label images on different pixel grids: one file has one frame of coordinates,
    and PTC at 0.25 µm/px beside DT at 1 µm/px would put one place at x=100 and at x=25."""
    from ..errors import OmnisegInputError

    grids = {(im.shape, None if im.mpp is None else round(im.mpp, 6)) for im in images}
    if len(grids) > 1:
        shown = "; ".join(f"{im.name}: {im.shape[1]} x {im.shape[0]} px"
                          + (f" at {im.mpp:g} µm/px" if im.mpp else "") for im in images)
        raise OmnisegInputError(f"the masks are on different pixel grids ({shown}); export "
                                "each grid to its own file")


def write_geojson(path: str | os.PathLike, images: Sequence[LabelImage],
                  object_type: str = "detection", region: Any = None,
                  min_area_um2: float | None = None, tolerance: float = SIMPLIFY_PX,
                  progress: Progress | None = None, should_stop: ShouldStop | None = None
                  ) -> int:
    """Write the objects of label images of one slide as a QuPath FeatureCollection.

    Parameters
    ----------
    path : path-like
        Output file (``.geojson``); written complete or not at all.
    images : sequence of LabelImage
        Label images on one slide's pixel grid.
    object_type : {"detection", "annotation"}
        One detection per object, or one annotation per class holding all its objects (a
        MultiPolygon).
    region : shapely geometry, optional
        Only what lies inside it (level-0 pixels).
    min_area_um2 : float, optional
        Objects smaller than this (µm²) are left out; None: each tissue's default. The sizes
        used are stated in the collection's ``properties`` (QuPath ignores them).
    tolerance : float
        Outline simplification in pixels (0 keeps the exact pixel outline).

    Returns
    -------
    int
        Features written (an empty mask gives an empty FeatureCollection).
    """
    if object_type not in ("detection", "annotation"):
        raise ValueError(f"object_type must be 'detection' or 'annotation', not {object_type!r}")
    same_grid(images)
    objects = measured_objects(images, region, min_area_um2, progress, should_stop)
    n = 0
    with written_atomically(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        unit = "µm^2" if all(im.mpp for im in images) else "px^2"
        stated = {f"minimum object area {unit}": minimum_sizes(images, min_area_um2)}
        f.write('{"type": "FeatureCollection", "properties": '
                f'{json.dumps(stated, ensure_ascii=False)}, "features": [')
        for feat in (_detections(objects, tolerance) if object_type == "detection"
                     else _annotations(objects, tolerance)):
            f.write(("\n" if n == 0 else ",\n") + json.dumps(feat, ensure_ascii=False))
            n += 1
        f.write("\n]}\n")
    return n


def _detections(objects, tolerance: float):
    for m in objects:
        yield feature(simplified(m.obj.polygon, tolerance), "detection", m.cls,
                      m.measurements())


def _annotations(objects, tolerance: float):
    from shapely.geometry import MultiPolygon

    by_class: dict[tuple[str, str], list[Measured]] = {}
    for m in objects:
        by_class.setdefault((m.image.name, m.cls.name), []).append(m)
    for items in by_class.values():
        polys = [simplified(m.obj.polygon, tolerance) for m in items]
        geom = polys[0] if len(polys) == 1 else MultiPolygon(polys)
        first = items[0]
        s = first.image.mpp or 1.0
        u = first.unit
        yield feature(geom, "annotation", first.cls, {
            f"Area {u}^2": round(sum(m.obj.polygon.area for m in items) * s * s, 3),
            "Num objects": len(items)})

