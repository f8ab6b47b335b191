"""Label images (masks) as lazy pyramids, and what their values mean.

A label image is a 2D integer image on a slide's pixel grid: the 0/1 tissue masks that
``omniseg segment`` writes, the six-channel masks of the simulator, or a painted image whose
values follow the vocabulary (DT 1, PT 2, CAP 3, TUFT 4, VES 5, PTC 6). Opening reads metadata
only; levels are dask arrays decoded tile by tile.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from .. import vocab
from ..errors import OmnisegInputError, short_reason
from .atomic import file_stem

#: A level coarser than this on its long side ends a built pyramid.
_SMALLEST_LEVEL = 512
#: A single-channel PNG with more distinct values than this is a grayscale picture, not labels.
MAX_PNG_LABELS = 64
#: Grey for label values the vocabulary does not name.
_UNNAMED_COLOUR = (160, 160, 160)


@dataclass(frozen=True)
class LabelClass:
    """What one label value means: a QuPath classification name and an RGB colour (0-255)."""

    name: str
    color: tuple[int, int, int]
    code: str | None = None  # the tissue code when the class is a tissue


@dataclass
class LabelImage:
    """A 2D label image: levels finest first, pixel size and the meaning of its values.

    Attributes
    ----------
    levels : list of array
        ``(Y, X)`` integer arrays (numpy, dask or zarr), finest first.
    mpp : float or None
        Level-0 micrometres per pixel.
    name : str
        What the user calls it (a layer or file name).
    tissue : str or None
        The tissue code of a 0/1 mask of one tissue; None when values follow the vocabulary.
    """

    levels: list
    mpp: float | None
    name: str
    tissue: str | None = None
    path: Path | None = None
    _handles: list = field(default_factory=list, repr=False)

    @property
    def level0(self) -> Any:
        """The full-resolution level."""
        return self.levels[0]

    @property
    def shape(self) -> tuple[int, int]:
        """Height and width of level 0 in pixels."""
        return tuple(self.levels[0].shape[:2])

    def label_class(self, value: int) -> LabelClass:
        """The class of a label value (a 0/1 mask's 1 is its tissue)."""
        return label_class(value, self.tissue)

    def close(self) -> None:
        """Close the files the levels are read from."""
        for h in self._handles:
            h.close()
        self._handles.clear()


def label_class(value: int, tissue: str | None = None) -> LabelClass:
    """The class of ``value``: ``tissue`` for a one-tissue mask, else the vocabulary's tissue
    ``value - 1``; values the vocabulary does not name are "Label N" in grey."""
    if tissue is not None and value == 1:
        t = vocab.tissue(tissue)
    elif tissue is None and 1 <= value <= len(vocab.TISSUES):
        t = vocab.TISSUES[value - 1]
    else:
        return LabelClass(f"Label {value}", _UNNAMED_COLOUR)
    r, g, b = (int(round(255 * c)) for c in t.color[:3])
    return LabelClass(t.label, (r, g, b), t.code)


def label_names(tissue: str | None = None) -> dict[str, list]:
    """A labels layer's table of what its values mean, as napari's ``features`` (an ``index``
    column of label values and a ``tissue`` column of names, shown under the cursor): 0/1 for
    a one-tissue mask, else the vocabulary's values."""
    if tissue is not None:
        return {"index": [0, 1], "tissue": ["background", vocab.tissue(tissue).label]}
    return {"index": [0, *[t.task_id + 1 for t in vocab.TISSUES]],
            "tissue": ["background", *[t.label for t in vocab.TISSUES]]}


def tissue_in_name(name: str) -> str | None:
    """The tissue a mask's name or file stem names (``"x_ptc"``, ``"ptc mask of x"``,
    ``"PTC 40x"``), or None."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    for candidate in (words[-1:] + words[:1]) if words else []:
        if candidate in vocab.TISSUE_CODES:
            return candidate
    return None


def pyramid_of(level0: Any) -> list:
    """Nearest-neighbour levels of a label image (labels must not be averaged), each half the
    one before, until the long side is at most 512 pixels."""
    levels = [level0]
    if not hasattr(level0, "chunks"):
        level0 = da.from_array(level0, chunks=(1024, 1024))
    lv = level0
    while max(lv.shape) > _SMALLEST_LEVEL:
        lv = lv[::2, ::2]
        levels.append(lv)
    return levels


def is_label_file(path: str | os.PathLike) -> bool:
    """True for a TIFF or PNG whose pixels are integer labels, not an RGB scan."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                s = tif.series[0]
                if not np.issubdtype(s.dtype, np.integer):
                    return False
                channels = [n for a, n in zip(s.axes, s.shape) if a in "CS" and n > 1]
                if not channels:
                    return True
                # several channels are masks only when each is named as a tissue (or there
                # are the simulator's six): a two-channel or RGB image is not
                return len(channels) == 1 and all(
                    tissue_in_name(n) for n in _channel_names(tif, channels[0]))
        if suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                if im.mode not in ("L", "I", "I;16", "1"):
                    return False
                # a painted label image has a few values; a grayscale picture has a range
                # of them (it is the slide reader's to explain that it is not an RGB scan)
                return len(np.unique(np.asarray(im))) <= MAX_PNG_LABELS
    except Exception:
        return False
    return False


def open_labels(path: str | os.PathLike, mpp: float | None = None) -> list[LabelImage]:
    """Open a label image file: one :class:`LabelImage` per channel.

    A single-channel file is a one-tissue mask when its name says which tissue (``omniseg
    segment`` writes ``<slide>_<tissue>.ome.tif``), else values follow the vocabulary. A
    multichannel file (the simulator's six masks) gives one mask per named channel.

    Parameters
    ----------
    path : str or os.PathLike
        An OME-TIFF, TIFF or PNG label image.
    mpp : float, optional
        µm per pixel when the file does not say (overrides what it says).

    Returns
    -------
    list of LabelImage
        One lazily read pyramid per tissue or channel.

    Raises
    ------
    OmnisegInputError
        If the file cannot be read as labels.
    """
    path = Path(path)
    if path.suffix.lower() == ".png":
        return [_open_png(path, mpp)]
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, OSError, ValueError) as e:
        raise OmnisegInputError(f"{path.name} could not be read as a label image "
                                f"({short_reason(e)})") from None
    try:
        return _tiff_labels(tif, path, mpp)
    except BaseException:
        tif.close()
        raise


def _tiff_labels(tif: Any, path: Path, mpp: float | None) -> list[LabelImage]:
    import zarr

    from .slides import check_not_truncated, tiff_pixel_size

    series = tif.series[0]
    check_not_truncated(tif, tif.series, [(0, k) for k in range(len(series.levels))], path)
    if not np.issubdtype(series.dtype, np.integer):
        raise OmnisegInputError(f"{path.name} stores {series.dtype} pixels; labels are integers")
    levels = []
    for k in range(len(series.levels)):
        store = series.aszarr(level=k)
        levels.append(da.from_zarr(zarr.open_array(store, mode="r")))
    axes = series.axes
    channel_axis = next((i for i, a in enumerate(axes) if a in "CS"), None)
    planes = [(a, n) for a, n in zip(axes, series.shape) if a not in "CSYX" and n > 1]
    if planes:
        a, n = planes[0]
        raise OmnisegInputError(f"{path.name} holds {n} planes along its {a} axis; a label "
                                "image is one 2D plane (save the plane you painted on its own)")
    if channel_axis is not None and series.shape[channel_axis] > 1:
        n = series.shape[channel_axis]
        names = _channel_names(tif, n)
        if not all(tissue_in_name(c) for c in names):
            kind = "an RGB image (a scan)" if axes[channel_axis] == "S" else f"{n} channels"
            raise OmnisegInputError(
                f"{path.name} is {kind}, not a label image; give masks ('omniseg segment' "
                "writes them) or a painted label image (1 DT, 2 PT, 3 CAP, 4 TUFT, 5 VES, 6 PTC)")
    squeeze = tuple(0 if a not in "YX" and i != channel_axis else slice(None)
                    for i, a in enumerate(axes))
    levels = [lv[squeeze] for lv in levels]
    file_mpp = mpp or tiff_pixel_size(tif)[0]
    stem = file_stem(path)
    if channel_axis is None or levels[0].ndim == 2:
        if len(levels) == 1:
            levels = pyramid_of(levels[0])
        name = _ome_image_name(tif) or stem
        tissue = tissue_in_name(stem) or tissue_in_name(name)
        return [LabelImage(levels, file_mpp, stem, tissue, path, [tif])]
    c_at = sum(1 for i, a in enumerate(axes) if a in "CSYX" and i < channel_axis)
    n = levels[0].shape[c_at]
    names = _channel_names(tif, n)
    out = []
    for c in range(n):
        pick = tuple(c if i == c_at else slice(None) for i in range(levels[0].ndim))
        chan = [lv[pick] for lv in levels]
        if len(chan) == 1:
            chan = pyramid_of(chan[0])
        out.append(LabelImage(chan, file_mpp, f"{stem} {names[c]}", tissue_in_name(names[c]),
                              path, [tif] if c == 0 else []))
    return out


def _ome_image_name(tif: Any) -> str | None:
    if not (tif.is_ome and tif.ome_metadata):
        return None
    m = re.search(r'<Image [^>]*Name="([^"]*)"', tif.ome_metadata)
    return m.group(1) if m else None


def _channel_names(tif: Any, n: int) -> list[str]:
    """Channel names from OME metadata; six unnamed channels are the simulator's tissues."""
    names: list[str] = []
    if tif.is_ome and tif.ome_metadata:
        try:
            root = ET.fromstring(tif.ome_metadata)
            names = [el.get("Name", "") for el in root.iter()
                     if el.tag.rsplit("}", 1)[-1] == "Channel"]
        except ET.ParseError:
            names = []
    if len(names) != n:
        names = list(vocab.TISSUE_CODES) if n == len(vocab.TISSUES) else [
            f"channel {c}" for c in range(n)]
    return names


def _open_png(path: Path, mpp: float | None) -> LabelImage:
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except Exception as e:
        raise OmnisegInputError(f"{path.name} could not be read as a label image "
                                f"({short_reason(e)})") from None
    if arr.ndim != 2:
        raise OmnisegInputError(f"{path.name} is a colour image, not a label image")
    stem = file_stem(path)
    return LabelImage(pyramid_of(arr), mpp, stem, tissue_in_name(stem), path)


def label_dtype(image: LabelImage) -> np.dtype:
    """The smallest unsigned type that holds the image's labels (uint8 for masks)."""
    dt = np.dtype(image.level0.dtype)
    if dt.kind == "b" or (dt.kind in "iu" and dt.itemsize == 1):
        return np.dtype(np.uint8)
    coarsest = np.asarray(image.levels[-1])  # a cheap look at the range of values
    if dt.kind == "i" and coarsest.size and coarsest.min() < 0:
        raise OmnisegInputError(f"{image.name} has negative labels; labels are 0 or more")
    return np.dtype(np.uint16) if dt.itemsize <= 2 else np.dtype(np.uint32)


def write_label_pyramid(path: str | os.PathLike, image: LabelImage, tile: int = 512,
                        progress=None, should_stop=None) -> Path:
    """Write a label image as a tiled, lossless (zlib) pyramidal OME-TIFF.

    Levels are the image's own when it has several, else nearest-neighbour halvings; the
    level-0 pixel size is stored in µm. The product's reader and QuPath open it. Written
    complete or not at all.
    """
    from .export import write_mask_pyramids

    levels = image.levels if len(image.levels) > 1 else pyramid_of(image.level0)
    name = f"{image.tissue} mask of {image.name}" if image.tissue else image.name
    write_mask_pyramids([(Path(path), levels, name)], image.mpp, tile=tile, progress=progress,
                        should_stop=should_stop, dtype=label_dtype(image))
    return Path(path)


def micrometres_per_unit(unit: Any) -> float | None:
    """µm in one ``unit`` (a pint unit as napari keeps them, or a name); None for pixels or
    anything that is not a length."""
    if unit is None:
        return None
    if hasattr(unit, "dimensionality"):  # pint: napari's layer units
        try:
            return float((1 * unit).to("micrometer").magnitude)
        except Exception:
            return None
    return {"µm": 1.0, "um": 1.0, "micrometer": 1.0, "micron": 1.0, "nm": 1e-3,
            "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3}.get(str(unit))


def label_image_of(data: Any, name: str, scale: Sequence[float] | None = None,
                   units: Sequence[Any] | None = None, metadata: dict | None = None
                   ) -> LabelImage:
    """A :class:`LabelImage` from a labels layer's parts (its data, name, scale, units and
    metadata, as napari hands them to a writer).

    The pixel size is the layer's scale when its units are lengths; the tissue of a one-tissue
    mask comes from the metadata the Segment widget and the reader leave, or the name.

    Raises
    ------
    OmnisegInputError
        If the layer is not 2D.
    """
    # a multiscale layer's data is a sequence of levels (napari hands writers its own
    # MultiScaleData, a Sequence that is neither list nor tuple); an array is not a Sequence
    levels = list(data) if isinstance(data, Sequence) else [data]
    if levels[0].ndim != 2:
        raise OmnisegInputError(f"{name} has {levels[0].ndim} dimensions; only 2D labels "
                                "(on a slide) can be exported or measured")
    metadata = metadata or {}
    mpp = metadata.get("mpp")
    if mpp is None and scale is not None:
        per = micrometres_per_unit(units[-1]) if units else None
        mpp = float(scale[-1]) * per if per else None
    tissue = metadata.get("tissue") or tissue_in_name(name)
    return LabelImage(levels, mpp, name, tissue)
