"""npe2 writers for labels layers: QuPath GeoJSON, pyramidal OME-TIFF labels, CSV of objects.

napari hands a writer the layer's data and its attributes; the same functions are the
``omniseg export`` command's (:mod:`napari_omniseg.quantify`, :mod:`napari_omniseg.io.labels`).
A writer that fails tells the person in one sentence and returns no path: napari swallows a
``ValueError`` from a writer (and says only "not a valid writer"), so nothing may be raised.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .io.labels import LabelImage, label_image_of, write_label_pyramid

Writer = Callable[[str, Any, dict], list[str]]


def _image(data: Any, meta: dict) -> LabelImage:
    return label_image_of(data, meta.get("name", "labels"), meta.get("scale"),
                          meta.get("units"), meta.get("metadata"))


def _told(write: Writer) -> Writer:
    """``write``, with any failure shown as one sentence (and no path returned)."""
    @functools.wraps(write)
    def wrapper(path: str, data: Any, meta: dict) -> list[str]:
        from .errors import failure_sentence

        try:
            return write(path, data, meta)
        except Exception as e:
            from napari.utils.notifications import show_error

            show_error(failure_sentence(Path(path).name, e))
            return []

    return wrapper


@_told
def write_geojson(path: str, data: Any, meta: dict) -> list[str]:
    """A labels layer as QuPath GeoJSON: one classified detection per object."""
    from .quantify.geojson import write_geojson as write

    write(path, [_image(data, meta)])
    return [path]


@_told
def write_ome_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """A labels layer as a tiled, lossless pyramidal OME-TIFF with its pixel size."""
    write_label_pyramid(path, _image(data, meta))
    return [path]


@_told
def write_csv(path: str, data: Any, meta: dict) -> list[str]:
    """A labels layer's objects as CSV: class, area, perimeter and centroid per object."""
    from .quantify.measure import write_object_csv

    write_object_csv(path, [_image(data, meta)])
    return [path]
