"""Per-object and per-tissue measurements of label images: areas, counts, densities, sizes."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.atomic import written_atomically
from ..io.labels import LabelClass, LabelImage
from ..run import Progress, ShouldStop, scaled
from .polygons import TracedObject, trace_objects

#: Pieces smaller than this (µm²) of classes that are not tissues ("Label 7") are specks;
#: each tissue has its own default (:data:`napari_omniseg.vocab.MIN_OBJECT_UM2`).
MIN_OBJECT_UM2 = 5.0


def min_object_um2(cls: LabelClass, min_area_um2: float | None = None) -> float:
    """The smallest object of a class that counts: ``min_area_um2`` for every class when
    given, else the class's tissue default (:data:`napari_omniseg.vocab.MIN_OBJECT_UM2`)."""
    if min_area_um2 is not None:
        return float(min_area_um2)
    from .. import vocab

    return vocab.MIN_OBJECT_UM2.get(cls.code or "", MIN_OBJECT_UM2)


def minimum_sizes(images: Sequence[LabelImage], min_area_um2: float | None = None
                  ) -> dict[str, float]:
    """Each class's smallest object (µm², or px² without a pixel size), by class name, as the
    exported files state it."""
    from .. import vocab

    out: dict[str, float] = {}
    for im in images:
        values = [1] if im.tissue else [t.task_id + 1 for t in vocab.TISSUES]
        for v in values:
            cls = im.label_class(v)
            out[cls.name] = min_object_um2(cls, min_area_um2)
    if any(not im.tissue for im in images):
        out["other labels"] = min_object_um2(LabelClass("other", (0, 0, 0)), min_area_um2)
    return out


@dataclass
class Measured:
    """One traced object with its class and its measurements."""

    image: LabelImage
    cls: LabelClass
    obj: TracedObject

    @property
    def unit(self) -> str:
        """The length unit of the measurements: µm with a pixel size, else px."""
        return "µm" if self.image.mpp else "px"

    def measurements(self) -> dict[str, float]:
        """Area, perimeter and equivalent diameter, in µm when the pixel size is known, named
        as QuPath names its own (``"Area µm^2"``)."""
        s = self.image.mpp or 1.0
        area = self.obj.polygon.area * s * s
        u = self.unit
        return {f"Area {u}^2": round(area, 3),
                f"Perimeter {u}": round(self.obj.polygon.length * s, 3),
                f"Equivalent diameter {u}": round(2 * math.sqrt(area / math.pi), 3)}

    def row(self) -> dict[str, Any]:
        """A CSV row: image, class, value and measurements, with the centroid."""
        s = self.image.mpp or 1.0
        c = self.obj.polygon.centroid
        u = self.unit
        return {"image": self.image.name, "class": self.cls.name, "value": self.obj.value,
                **self.measurements(),
                f"Centroid X {u}": round(c.x * s, 3), f"Centroid Y {u}": round(c.y * s, 3)}


def measured_objects(images: Sequence[LabelImage], region: Any = None,
                     min_area_um2: float | None = None, progress: Progress | None = None,
                     should_stop: ShouldStop | None = None) -> Iterator[Measured]:
    """Every object of every label image, with its class; objects below ``min_area_um2``
    (µm², px² when an image has no pixel size; None: each tissue's default,
    :func:`min_object_um2`) are left out. ``region`` is in level-0 pixels."""
    for i, im in enumerate(images):
        part = scaled(progress, i * 1000, 1000, len(images) * 1000, f"{im.name}: ")
        for obj in trace_objects(im.level0, region, progress=part, should_stop=should_stop):
            cls = im.label_class(obj.value)
            if obj.polygon.area >= min_object_um2(cls, min_area_um2) / (im.mpp or 1.0) ** 2:
                yield Measured(im, cls, obj)


@dataclass
class ClassSummary:
    """The measurements of one class (tissue) of one label image.

    Attributes
    ----------
    area_mm2 : float
        Area of every pixel of the class, specks included (mm², or px when unknown).
    sizes : numpy.ndarray
        Object areas (µm²) of the objects at least the minimum size.
    tissue_mm2 : float or None
        Tissue area the density is per (glass excluded), if known.
    """

    image: str
    cls: LabelClass
    area_mm2: float
    sizes: np.ndarray = field(repr=False)
    tissue_mm2: float | None = None
    mpp: float | None = None

    @property
    def count(self) -> int:
        """The number of objects."""
        return int(len(self.sizes))

    @property
    def density(self) -> float | None:
        """Objects per mm² of tissue."""
        if not self.tissue_mm2:
            return None
        return self.count / self.tissue_mm2

    def row(self) -> dict[str, Any]:
        """The summary as one table row (column names carry the units)."""
        sizes = self.sizes
        area = "area mm2" if self.mpp else "area px"
        return {"image": self.image, "class": self.cls.name, area: round(self.area_mm2, 6),
                "objects": self.count,
                "objects per mm2 of tissue": (None if self.density is None
                                              else round(self.density, 3)),
                "tissue mm2": None if self.tissue_mm2 is None else round(self.tissue_mm2, 6),
                "area fraction of tissue": (None if not self.tissue_mm2 or not self.mpp
                                            else round(self.area_mm2 / self.tissue_mm2, 6)),
                "median object um2": round(float(np.median(sizes)), 3) if len(sizes) else None,
                "mean object um2": round(float(np.mean(sizes)), 3) if len(sizes) else None}


def summarize(images: Sequence[LabelImage], tissue_mm2: float | None = None,
              region: Any = None, min_area_um2: float | None = None,
              progress: Progress | None = None, should_stop: ShouldStop | None = None
              ) -> list[ClassSummary]:
    """Area, object count, density and object sizes of each class of each label image.

    Parameters
    ----------
    images : sequence of LabelImage
        One-tissue masks or vocabulary label images of one slide.
    tissue_mm2 : float, optional
        Tissue area (glass excluded, inside ``region``) that densities are per; see
        :func:`tissue_area_mm2`.
    region : shapely geometry, optional
        Only inside it (level-0 pixel coordinates).
    min_area_um2 : float, optional
        Smallest object counted (µm²); None: each tissue's default (:func:`min_object_um2`).
    """
    per: dict[tuple[str, str], dict] = {}
    for m in measured_objects(images, region, 0.0, progress, should_stop):
        s = m.image.mpp or 1.0
        entry = per.setdefault((m.image.name, m.cls.name),
                               {"image": m.image, "cls": m.cls, "pixels": 0, "sizes": []})
        entry["pixels"] += m.obj.pixels
        if m.obj.polygon.area >= min_object_um2(m.cls, min_area_um2) / s ** 2:
            entry["sizes"].append(m.obj.polygon.area * s * s)
    out = []
    for im in images:  # every tissue of every image has a row, found or not
        classes = [im.label_class(1)] if im.tissue else sorted(
            {e["cls"] for (name, _), e in per.items() if name == im.name}, key=lambda c: c.name)
        for cls in classes:
            e = per.get((im.name, cls.name), {"pixels": 0, "sizes": []})
            scale = (im.mpp ** 2 / 1e6) if im.mpp else 1.0
            out.append(ClassSummary(im.name, cls, e["pixels"] * scale,
                                    np.asarray(e["sizes"], float), tissue_mm2, im.mpp))
    return out


def tissue_area_mm2(slide: Any, region: Any = None) -> float | None:
    """Area of tissue (glass excluded) on a slide, inside ``region`` (level-0 pixels) if given;
    None when the slide has no pixel size or no level small enough to find the glass."""
    from ..predict.tissue_mask import tissue_mask

    if slide.mpp is None:
        return None
    tm = tissue_mask(slide)
    if tm is None:
        return None
    mask = tm.mask
    if region is not None:
        from rasterio import features
        from rasterio.transform import Affine

        inside = features.geometry_mask([region], out_shape=mask.shape, invert=True,
                                        transform=Affine.scale(tm.downsample))
        mask = mask & inside
    return float(mask.sum()) * (tm.downsample * slide.mpp) ** 2 / 1e6


def write_csv(path: str | os.PathLike, rows: Sequence[dict] | Iterator[dict]) -> int:
    """Write dict rows as CSV (columns: the union of the rows' keys, in first-seen order),
    complete or not at all. Returns the number of rows."""
    rows = list(rows)
    columns: dict[str, None] = {}
    for r in rows:
        columns.update(dict.fromkeys(r))
    with written_atomically(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def write_object_csv(path: str | os.PathLike, images: Sequence[LabelImage], region: Any = None,
                     min_area_um2: float | None = None, progress: Progress | None = None,
                     should_stop: ShouldStop | None = None) -> int:
    """One CSV row per object (class, area, perimeter, centroid) of every label image (objects
    below the minimum size left out, as in :func:`measured_objects`)."""
    return write_csv(path, (m.row() for m in measured_objects(
        images, region, min_area_um2, progress, should_stop)))

